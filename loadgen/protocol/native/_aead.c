/* One direction of a DTLS 1.2 record layer's AEAD (AES-GCM, ChaCha20-Poly1305) over OpenSSL's EVP.
 *
 * Why: cryptography's AESGCM keeps an encryption and a decryption context with their tables,
 * about 2.4 KiB per object, and a record layer needs one object per direction although each only
 * ever seals or only ever opens: 4.9 KiB of every association. One EVP context per direction,
 * keyed once and given a new nonce per record, is a third of that, for the same work per record.
 *
 * Optional: built at install when gcc and OpenSSL's headers are there (setup.py); without it the
 * record layer uses cryptography's classes (loadgen/protocol/native/record_layer.py). The API is
 * theirs: encrypt(nonce, data, aad) -> ciphertext + tag, decrypt(...) -> plaintext or InvalidTag.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <openssl/evp.h>

#define NONCE_LEN 12
#define TAG_LEN 16

static PyObject *invalid_tag; /* cryptography.exceptions.InvalidTag */

typedef struct {
    PyObject_HEAD
    EVP_CIPHER_CTX *ctx;
    int encrypt; /* 1: seals only; 0: opens only */
} Context;

static void Context_dealloc(Context *self) {
    EVP_CIPHER_CTX_free(self->ctx); /* cleanses the key schedule */
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static int Context_init(Context *self, PyObject *args, PyObject *kwargs) {
    static char *keywords[] = {"cipher", "key", "encrypt", NULL};
    const char *name;
    Py_buffer key;
    int encrypt;
    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "sy*p", keywords, &name, &key, &encrypt))
        return -1;
    EVP_CIPHER *cipher = EVP_CIPHER_fetch(NULL, name, NULL);
    int ok = cipher != NULL && EVP_CIPHER_get_key_length(cipher) == key.len &&
             EVP_CIPHER_get_iv_length(cipher) == NONCE_LEN &&
             (EVP_CIPHER_get_flags(cipher) & EVP_CIPH_FLAG_AEAD_CIPHER);
    if (!ok) {
        EVP_CIPHER_free(cipher);
        PyBuffer_Release(&key);
        PyErr_Format(PyExc_ValueError, "%s: not an AEAD cipher with a %zd-byte key and a 12-byte nonce", name,
                     key.len);
        return -1;
    }
    EVP_CIPHER_CTX_free(self->ctx); /* __init__ called twice */
    self->ctx = EVP_CIPHER_CTX_new();
    ok = self->ctx != NULL && EVP_CipherInit_ex(self->ctx, cipher, NULL, key.buf, NULL, encrypt) == 1;
    EVP_CIPHER_free(cipher); /* the context holds its own reference */
    PyBuffer_Release(&key);
    if (!ok) {
        PyErr_SetString(PyExc_RuntimeError, "OpenSSL could not key the AEAD context");
        return -1;
    }
    self->encrypt = encrypt;
    return 0;
}

/* The nonce and the associated data of one record; 0 on success. */
static int start_record(Context *self, Py_buffer *nonce, Py_buffer *aad) {
    int len;
    if (nonce->len != NONCE_LEN) {
        PyErr_SetString(PyExc_ValueError, "the nonce must be 12 bytes");
        return -1;
    }
    if (aad->len > INT_MAX || EVP_CipherInit_ex(self->ctx, NULL, NULL, NULL, nonce->buf, -1) != 1 ||
        (aad->len && EVP_CipherUpdate(self->ctx, NULL, &len, aad->buf, (int)aad->len) != 1)) {
        PyErr_SetString(PyExc_RuntimeError, "OpenSSL refused the record's nonce or associated data");
        return -1;
    }
    return 0;
}

static PyObject *Context_encrypt(Context *self, PyObject *args) {
    Py_buffer nonce, data, aad;
    PyObject *out = NULL;
    int len, tail;
    if (!PyArg_ParseTuple(args, "y*y*z*", &nonce, &data, &aad))
        return NULL;
    if (!self->encrypt || self->ctx == NULL) {
        PyErr_SetString(PyExc_TypeError, "this context opens records; it cannot seal");
    } else if (data.len > INT_MAX - TAG_LEN) {
        PyErr_SetString(PyExc_OverflowError, "data too long");
    } else if (start_record(self, &nonce, &aad) == 0 &&
               (out = PyBytes_FromStringAndSize(NULL, data.len + TAG_LEN)) != NULL) {
        unsigned char *buf = (unsigned char *)PyBytes_AS_STRING(out);
        if (EVP_CipherUpdate(self->ctx, buf, &len, data.buf, (int)data.len) != 1 ||
            EVP_CipherFinal_ex(self->ctx, buf + len, &tail) != 1 ||
            EVP_CIPHER_CTX_ctrl(self->ctx, EVP_CTRL_AEAD_GET_TAG, TAG_LEN, buf + data.len) != 1) {
            Py_CLEAR(out);
            PyErr_SetString(PyExc_RuntimeError, "OpenSSL could not seal the record");
        }
    }
    PyBuffer_Release(&nonce);
    PyBuffer_Release(&data);
    PyBuffer_Release(&aad);
    return out;
}

static PyObject *Context_decrypt(Context *self, PyObject *args) {
    Py_buffer nonce, data, aad;
    PyObject *out = NULL;
    int len, tail;
    if (!PyArg_ParseTuple(args, "y*y*z*", &nonce, &data, &aad))
        return NULL;
    if (self->encrypt || self->ctx == NULL) {
        PyErr_SetString(PyExc_TypeError, "this context seals records; it cannot open");
    } else if (data.len < TAG_LEN || data.len > INT_MAX) {
        PyErr_SetNone(invalid_tag); /* too short to hold a tag: as cryptography says it */
    } else if (start_record(self, &nonce, &aad) == 0 &&
               (out = PyBytes_FromStringAndSize(NULL, data.len - TAG_LEN)) != NULL) {
        unsigned char *buf = (unsigned char *)PyBytes_AS_STRING(out);
        unsigned char *tag = (unsigned char *)data.buf + data.len - TAG_LEN;
        int body = (int)(data.len - TAG_LEN);
        if (EVP_CipherUpdate(self->ctx, buf, &len, data.buf, body) != 1 ||
            EVP_CIPHER_CTX_ctrl(self->ctx, EVP_CTRL_AEAD_SET_TAG, TAG_LEN, tag) != 1) {
            Py_CLEAR(out);
            PyErr_SetString(PyExc_RuntimeError, "OpenSSL could not open the record");
        } else if (EVP_CipherFinal_ex(self->ctx, buf + len, &tail) != 1) {
            Py_CLEAR(out); /* the plaintext written so far is not authentic: never returned */
            PyErr_SetNone(invalid_tag);
        }
    }
    PyBuffer_Release(&nonce);
    PyBuffer_Release(&data);
    PyBuffer_Release(&aad);
    return out;
}

static PyMethodDef Context_methods[] = {
    {"encrypt", (PyCFunction)Context_encrypt, METH_VARARGS,
     "encrypt(nonce, data, associated_data) -> ciphertext + 16-byte tag (a sealing context only)"},
    {"decrypt", (PyCFunction)Context_decrypt, METH_VARARGS,
     "decrypt(nonce, data, associated_data) -> plaintext; InvalidTag if it does not authenticate "
     "(an opening context only)"},
    {NULL},
};

static PyTypeObject ContextType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "loadgen.protocol.native._aead.Context",
    .tp_doc = "Context(cipher, key, encrypt): one direction's AEAD, an OpenSSL cipher name "
              "(AES-128-GCM, AES-256-GCM, ChaCha20-Poly1305) keyed once",
    .tp_basicsize = sizeof(Context),
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_new = PyType_GenericNew,
    .tp_init = (initproc)Context_init,
    .tp_dealloc = (destructor)Context_dealloc,
    .tp_methods = Context_methods,
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "_aead", "One direction of a DTLS record layer's AEAD over OpenSSL's EVP.", -1, NULL,
};

PyMODINIT_FUNC PyInit__aead(void) {
    PyObject *exceptions = PyImport_ImportModule("cryptography.exceptions");
    if (exceptions == NULL)
        return NULL;
    invalid_tag = PyObject_GetAttrString(exceptions, "InvalidTag");
    Py_DECREF(exceptions);
    if (invalid_tag == NULL || PyType_Ready(&ContextType) < 0)
        return NULL;
    PyObject *m = PyModule_Create(&module);
    if (m == NULL)
        return NULL;
    Py_INCREF(&ContextType);
    if (PyModule_AddObject(m, "Context", (PyObject *)&ContextType) < 0) {
        Py_DECREF(&ContextType);
        Py_DECREF(m);
        return NULL;
    }
    return m;
}
