"""The optional C accelerator (``loadgen.protocol.native._aead``); everything else is in pyproject.toml.

Built at install when the machine has gcc, Python's headers and OpenSSL's (``libssl-dev``); when the
build fails the install goes on without it (``optional=True``) and the record layer uses
cryptography's AEAD classes instead (``loadgen.protocol.native.record_layer.ACCELERATED`` says which).
"""

from setuptools import Extension, setup

setup(ext_modules=[Extension("loadgen.protocol.native._aead", ["loadgen/protocol/native/_aead.c"],
                             libraries=["crypto"], optional=True)])
