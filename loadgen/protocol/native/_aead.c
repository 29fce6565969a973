/* One direction of a DTLS 1.2 or TLS 1.2 record layer's AEAD (AES-GCM, ChaCha20-Poly1305) over OpenSSL's EVP.
 *
 * Why: cryptography's AESGCM keeps an encryption and a decryption context with their tables,
 * about 2.4 KiB per object, and a record layer needs one object per direction although each only
 * ever seals or only ever opens: 4.9 KiB of every association. One EVP context per direction,
 * keyed once and given a new nonce per record, is a third of that, for the same work per record.
 *
 * Optional: built at install when gcc and OpenSSL's headers are there (setup.py); without it the
 * record layer uses cryptography's classes (loadgen/protocol/native/record_layer.py). The API is
 * theirs: encrypt(nonce, data, aad) -> ciphertext + tag, decrypt(...) -> plaintext or InvalidTag.
 * seal_record and open_record do a whole DTLS 1.2 record (RFC 6347 4.1, RFC 5288, RFC 7905), and
 * seal_tls_record and open_tls_record a whole TLS 1.2 one (RFC 5246 6.2.3.3, its sequence number implicit): the
 * header, the nonce and the associated data are built here too, which is most of what a record cost
 * in Python (2.6 us to seal where the AEAD itself is 1.1 us).
 *
 * p_hash is the TLS 1.2 PRF (RFC 5246 5) over SHA-256 or SHA-384, the whole expansion in one call:
 * in Python each of a handshake side's dozen HMACs was six method calls on hashlib objects, 10 us a
 * side where the hashing itself (SHA-NI) is about 1.5 us.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <openssl/evp.h>
#include <openssl/crypto.h>
#include <string.h>

#define NONCE_LEN 12
#define TAG_LEN 16
#define DTLS_HEADER_LEN 13    /* type, version, epoch + sequence number, length */
#define TLS_HEADER_LEN 5      /* type, version, length: TLS numbers its records implicitly */
#define EXPLICIT_LEN 8        /* GCM's per-record nonce: the epoch and sequence number again */
#define MAX_PLAINTEXT 16384   /* RFC 5246 6.2.1 */

static PyObject *invalid_tag; /* cryptography.exceptions.InvalidTag */
static EVP_MD *sha256, *sha384;  /* fetched once: a fetch per call costs more than the hashing */
/* p_hash's digest contexts, made once and reused (the GIL serialises the calls): making and
 * freeing three per call cost ~8% of the PRF (a handshake side's 4.26 -> 3.91 us, timeit). */
static EVP_MD_CTX *prf_inner, *prf_outer, *prf_scratch;

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

/* Seals len bytes of data into out (ciphertext, then the tag); 0 on success, else an exception set. */
static int seal_into(Context *self, const unsigned char *data, int len, unsigned char *out) {
    int done, tail;
    if (EVP_CipherUpdate(self->ctx, out, &done, data, len) != 1 ||
        EVP_CipherFinal_ex(self->ctx, out + done, &tail) != 1 ||
        EVP_CIPHER_CTX_ctrl(self->ctx, EVP_CTRL_AEAD_GET_TAG, TAG_LEN, out + len) != 1) {
        PyErr_SetString(PyExc_RuntimeError, "OpenSSL could not seal the record");
        return -1;
    }
    return 0;
}

/* Opens len bytes (ciphertext, then the tag) into out: 1 authentic, 0 not (out must not be used),
 * -1 an exception set. */
static int open_into(Context *self, const unsigned char *data, int len, unsigned char *out) {
    int done, tail;
    if (EVP_CipherUpdate(self->ctx, out, &done, data, len - TAG_LEN) != 1 ||
        EVP_CIPHER_CTX_ctrl(self->ctx, EVP_CTRL_AEAD_SET_TAG, TAG_LEN, (void *)(data + len - TAG_LEN)) != 1) {
        PyErr_SetString(PyExc_RuntimeError, "OpenSSL could not open the record");
        return -1;
    }
    return EVP_CipherFinal_ex(self->ctx, out + done, &tail) == 1;
}

static int check_direction(Context *self, int encrypt) {
    if (self->ctx == NULL || self->encrypt != encrypt) {
        PyErr_SetString(PyExc_TypeError, encrypt ? "this context opens records; it cannot seal"
                                                 : "this context seals records; it cannot open");
        return -1;
    }
    return 0;
}

static PyObject *Context_encrypt(Context *self, PyObject *args) {
    Py_buffer nonce, data, aad;
    PyObject *out = NULL;
    if (!PyArg_ParseTuple(args, "y*y*z*", &nonce, &data, &aad))
        return NULL;
    if (check_direction(self, 1) < 0) {
    } else if (data.len > INT_MAX - TAG_LEN) {
        PyErr_SetString(PyExc_OverflowError, "data too long");
    } else if (start_record(self, &nonce, &aad) == 0 &&
               (out = PyBytes_FromStringAndSize(NULL, data.len + TAG_LEN)) != NULL) {
        if (seal_into(self, data.buf, (int)data.len, (unsigned char *)PyBytes_AS_STRING(out)) < 0)
            Py_CLEAR(out);
    }
    PyBuffer_Release(&nonce);
    PyBuffer_Release(&data);
    PyBuffer_Release(&aad);
    return out;
}

static PyObject *Context_decrypt(Context *self, PyObject *args) {
    Py_buffer nonce, data, aad;
    PyObject *out = NULL;
    if (!PyArg_ParseTuple(args, "y*y*z*", &nonce, &data, &aad))
        return NULL;
    if (check_direction(self, 0) < 0) {
    } else if (data.len < TAG_LEN || data.len > INT_MAX) {
        PyErr_SetNone(invalid_tag); /* too short to hold a tag: as cryptography says it */
    } else if (start_record(self, &nonce, &aad) == 0 &&
               (out = PyBytes_FromStringAndSize(NULL, data.len - TAG_LEN)) != NULL) {
        int authentic = open_into(self, data.buf, (int)data.len, (unsigned char *)PyBytes_AS_STRING(out));
        if (authentic != 1) {
            Py_CLEAR(out); /* the plaintext written so far is not authentic: never returned */
            if (authentic == 0)
                PyErr_SetNone(invalid_tag);
        }
    }
    PyBuffer_Release(&nonce);
    PyBuffer_Release(&data);
    PyBuffer_Release(&aad);
    return out;
}

/* The record's nonce: the 4-byte salt and the explicit nonce (GCM), or the 12-byte IV XORed with the
 * epoch and sequence number, left-padded (ChaCha20-Poly1305, RFC 7905). */
static int record_nonce(Py_buffer *iv, const unsigned char *epoch_seq, const unsigned char *explicit_nonce,
                        unsigned char *nonce) {
    if (iv->len == 4) {
        memcpy(nonce, iv->buf, 4);
        memcpy(nonce + 4, explicit_nonce, EXPLICIT_LEN);
    } else if (iv->len == NONCE_LEN) {
        const unsigned char *salt = iv->buf;
        memcpy(nonce, salt, 4);
        for (int i = 0; i < 8; i++)
            nonce[4 + i] = salt[4 + i] ^ epoch_seq[i];
    } else {
        PyErr_SetString(PyExc_ValueError, "the fixed IV must be 4 or 12 bytes");
        return -1;
    }
    return 0;
}

/* The associated data of a record (RFC 5246 6.2.3.3): epoch + sequence number, type, version, length. */
static void record_aad(const unsigned char *epoch_seq, int content_type, int version, Py_ssize_t len,
                       unsigned char *aad) {
    memcpy(aad, epoch_seq, 8);
    aad[8] = (unsigned char)content_type;
    aad[9] = (unsigned char)(version >> 8);
    aad[10] = (unsigned char)version;
    aad[11] = (unsigned char)(len >> 8);
    aad[12] = (unsigned char)len;
}

/* One whole record: the header (DTLS: 13 bytes, with the epoch and sequence number; TLS: 5 bytes, the
 * sequence number implicit), the explicit nonce (GCM), the ciphertext and the tag. */
static PyObject *seal_whole(Context *self, int content_type, int version, const unsigned char *epoch_seq,
                            Py_buffer *iv, Py_buffer *data, int header_len) {
    unsigned char nonce[NONCE_LEN], aad[13];
    Py_ssize_t explicit_len = iv->len == 4 ? EXPLICIT_LEN : 0;
    Py_ssize_t body = explicit_len + data->len + TAG_LEN;
    if (check_direction(self, 1) < 0 || record_nonce(iv, epoch_seq, epoch_seq, nonce) < 0)
        return NULL;
    if (body > 0xFFFF) {
        PyErr_SetString(PyExc_ValueError, "too long for one record's 16-bit length");
        return NULL;
    }
    record_aad(epoch_seq, content_type, version, data->len, aad);
    if (EVP_CipherInit_ex(self->ctx, NULL, NULL, NULL, nonce, -1) != 1 ||
        EVP_CipherUpdate(self->ctx, NULL, &(int){0}, aad, sizeof aad) != 1) {
        PyErr_SetString(PyExc_RuntimeError, "OpenSSL refused the record's nonce or associated data");
        return NULL;
    }
    PyObject *out = PyBytes_FromStringAndSize(NULL, header_len + body);
    if (out == NULL)
        return NULL;
    unsigned char *rec = (unsigned char *)PyBytes_AS_STRING(out);
    rec[0] = (unsigned char)content_type;
    rec[1] = (unsigned char)(version >> 8);
    rec[2] = (unsigned char)version;
    if (header_len == DTLS_HEADER_LEN)
        memcpy(rec + 3, epoch_seq, 8);
    rec[header_len - 2] = (unsigned char)(body >> 8);
    rec[header_len - 1] = (unsigned char)body;
    memcpy(rec + header_len, epoch_seq, explicit_len);
    if (seal_into(self, data->buf, (int)data->len, rec + header_len + explicit_len) < 0)
        Py_CLEAR(out);
    return out;
}

/* The plaintext of one whole record (see seal_whole), None when it does not authenticate or its length
 * cannot be; the caller checked its header and length field. */
static PyObject *open_whole(Context *self, Py_buffer *record, const unsigned char *epoch_seq, Py_buffer *iv,
                            int version, int header_len) {
    const unsigned char *rec = record->buf;
    Py_ssize_t explicit_len = iv->len == 4 ? EXPLICIT_LEN : 0;
    Py_ssize_t sealed = record->len - header_len - explicit_len; /* ciphertext and tag */
    unsigned char nonce[NONCE_LEN], aad[13];
    if (check_direction(self, 0) < 0)
        return NULL;
    if (sealed < TAG_LEN || sealed > MAX_PLAINTEXT + TAG_LEN)
        return Py_NewRef(Py_None); /* too short to hold a tag, or more than a record may carry */
    if (record_nonce(iv, epoch_seq, rec + header_len, nonce) < 0)
        return NULL;
    record_aad(epoch_seq, rec[0], version, sealed - TAG_LEN, aad);
    if (EVP_CipherInit_ex(self->ctx, NULL, NULL, NULL, nonce, -1) != 1 ||
        EVP_CipherUpdate(self->ctx, NULL, &(int){0}, aad, sizeof aad) != 1) {
        PyErr_SetString(PyExc_RuntimeError, "OpenSSL refused the record's nonce or associated data");
        return NULL;
    }
    PyObject *out = PyBytes_FromStringAndSize(NULL, sealed - TAG_LEN);
    if (out == NULL)
        return NULL;
    int authentic = open_into(self, rec + header_len + explicit_len, (int)sealed,
                              (unsigned char *)PyBytes_AS_STRING(out));
    if (authentic != 1) {
        Py_CLEAR(out); /* never the unauthentic plaintext */
        if (authentic == 0)
            out = Py_NewRef(Py_None);
    }
    return out;
}

static void sequence_bytes(unsigned long long value, unsigned char *out) {
    for (int i = 0; i < 8; i++)
        out[i] = (unsigned char)(value >> (56 - 8 * i));
}

static PyObject *Context_seal_record(Context *self, PyObject *args) {
    int content_type, version;
    unsigned long long epoch_seq_value;
    Py_buffer iv, data;
    if (!PyArg_ParseTuple(args, "iiKy*y*", &content_type, &version, &epoch_seq_value, &iv, &data))
        return NULL;
    unsigned char epoch_seq[8];
    sequence_bytes(epoch_seq_value, epoch_seq);
    PyObject *out = seal_whole(self, content_type, version, epoch_seq, &iv, &data, DTLS_HEADER_LEN);
    PyBuffer_Release(&iv);
    PyBuffer_Release(&data);
    return out;
}

static PyObject *Context_open_record(Context *self, PyObject *args) {
    Py_buffer record, iv;
    int version;
    PyObject *out = NULL;
    if (!PyArg_ParseTuple(args, "y*y*i", &record, &iv, &version))
        return NULL;
    if (record.len < DTLS_HEADER_LEN) /* the header's epoch and sequence number are read below */
        out = Py_NewRef(Py_None);
    else
        out = open_whole(self, &record, (const unsigned char *)record.buf + 3, &iv, version, DTLS_HEADER_LEN);
    PyBuffer_Release(&record);
    PyBuffer_Release(&iv);
    return out;
}

static PyObject *Context_seal_tls_record(Context *self, PyObject *args) {
    int content_type, version;
    unsigned long long seq;
    Py_buffer iv, data;
    if (!PyArg_ParseTuple(args, "iiKy*y*", &content_type, &version, &seq, &iv, &data))
        return NULL;
    unsigned char seq_bytes[8];
    sequence_bytes(seq, seq_bytes);
    PyObject *out = seal_whole(self, content_type, version, seq_bytes, &iv, &data, TLS_HEADER_LEN);
    PyBuffer_Release(&iv);
    PyBuffer_Release(&data);
    return out;
}

static PyObject *Context_open_tls_record(Context *self, PyObject *args) {
    Py_buffer record, iv;
    unsigned long long seq;
    int version;
    if (!PyArg_ParseTuple(args, "y*Ky*i", &record, &seq, &iv, &version))
        return NULL;
    unsigned char seq_bytes[8];
    sequence_bytes(seq, seq_bytes);
    PyObject *out = open_whole(self, &record, seq_bytes, &iv, version, TLS_HEADER_LEN);
    PyBuffer_Release(&record);
    PyBuffer_Release(&iv);
    return out;
}

#define MAX_MD 64     /* SHA-384's output is 48 bytes, its block 128 */
#define MAX_BLOCK 128
#define MAX_PRF_OUT 1024

/* out = HMAC(key; part1 || part2) from the keyed inner and outer states (RFC 2104), via scratch. */
static int hmac_from(EVP_MD_CTX *scratch, const EVP_MD_CTX *inner, const EVP_MD_CTX *outer,
                     const unsigned char *part1, size_t len1, const unsigned char *part2, size_t len2,
                     unsigned char *out) {
    unsigned char digest[MAX_MD];
    unsigned int n;
    return EVP_MD_CTX_copy_ex(scratch, inner) && EVP_DigestUpdate(scratch, part1, len1)
        && (len2 == 0 || EVP_DigestUpdate(scratch, part2, len2)) && EVP_DigestFinal_ex(scratch, digest, &n)
        && EVP_MD_CTX_copy_ex(scratch, outer) && EVP_DigestUpdate(scratch, digest, n)
        && EVP_DigestFinal_ex(scratch, out, &n);
}

/* P_hash(secret, label || seed) to length bytes (RFC 5246 5), into out; 1 on success. */
static int p_hash_into(const EVP_MD *md, const unsigned char *secret, size_t secret_len, const unsigned char *label,
                       size_t label_len, const unsigned char *seed, size_t seed_len, unsigned char *out, size_t length) {
    int ok = 0;
    size_t block = (size_t)EVP_MD_get_block_size(md), md_len = (size_t)EVP_MD_get_size(md);
    unsigned char key[MAX_BLOCK] = {0}, pad[MAX_BLOCK], a[MAX_MD], chunk[MAX_MD], label_seed[MAX_PRF_OUT];
    EVP_MD_CTX *inner = prf_inner, *outer = prf_outer, *scratch = prf_scratch;
    unsigned int n;
    if (block > MAX_BLOCK || md_len > MAX_MD)
        goto done;
    if (secret_len > block) { /* a key longer than the block is hashed first */
        if (!EVP_Digest(secret, secret_len, key, &n, md, NULL))
            goto done;
    } else {
        memcpy(key, secret, secret_len);
    }
    for (size_t i = 0; i < block; i++)
        pad[i] = key[i] ^ 0x36;
    if (!EVP_DigestInit_ex(inner, md, NULL) || !EVP_DigestUpdate(inner, pad, block))
        goto done;
    for (size_t i = 0; i < block; i++)
        pad[i] = key[i] ^ 0x5c;
    if (!EVP_DigestInit_ex(outer, md, NULL) || !EVP_DigestUpdate(outer, pad, block))
        goto done;
    memcpy(label_seed, label, label_len);
    memcpy(label_seed + label_len, seed, seed_len);
    size_t ls_len = label_len + seed_len, done_len = 0;
    /* A(1) = HMAC(label || seed); each block: HMAC(A(i) || label || seed), then A(i+1) = HMAC(A(i)). */
    if (!hmac_from(scratch, inner, outer, label_seed, ls_len, NULL, 0, a))
        goto done;
    while (done_len < length) {
        if (!hmac_from(scratch, inner, outer, a, md_len, label_seed, ls_len, chunk))
            goto done;
        size_t take = length - done_len < md_len ? length - done_len : md_len;
        memcpy(out + done_len, chunk, take);
        done_len += take;
        if (done_len < length && !hmac_from(scratch, inner, outer, a, md_len, NULL, 0, a))
            goto done;
    }
    ok = 1;
done:
    OPENSSL_cleanse(key, sizeof key);
    OPENSSL_cleanse(pad, sizeof pad);
    OPENSSL_cleanse(a, sizeof a);
    OPENSSL_cleanse(chunk, sizeof chunk);
    /* Reset, so no keyed state outlives the call. */
    EVP_MD_CTX_reset(inner);
    EVP_MD_CTX_reset(outer);
    EVP_MD_CTX_reset(scratch);
    return ok;
}

static PyObject *p_hash(PyObject *module, PyObject *args) {
    const char *digest;
    Py_buffer secret, label, seed;
    Py_ssize_t length;
    if (!PyArg_ParseTuple(args, "sy*y*y*n", &digest, &secret, &label, &seed, &length))
        return NULL;
    PyObject *result = NULL;
    const EVP_MD *md = strcmp(digest, "sha256") == 0 ? sha256 : strcmp(digest, "sha384") == 0 ? sha384 : NULL;
    if (md == NULL) {
        PyErr_Format(PyExc_ValueError, "p_hash: no digest %s (sha256, sha384)", digest);
    } else if (length < 0 || length > MAX_PRF_OUT || label.len + seed.len > MAX_PRF_OUT) {
        PyErr_SetString(PyExc_ValueError, "p_hash: length, or label and seed, over 1024 bytes");
    } else if ((result = PyBytes_FromStringAndSize(NULL, length)) != NULL
               && !p_hash_into(md, secret.buf, (size_t)secret.len, label.buf, (size_t)label.len, seed.buf,
                               (size_t)seed.len, (unsigned char *)PyBytes_AS_STRING(result), (size_t)length)) {
        Py_CLEAR(result);
        PyErr_SetString(PyExc_RuntimeError, "p_hash: OpenSSL's digest failed");
    }
    PyBuffer_Release(&secret);
    PyBuffer_Release(&label);
    PyBuffer_Release(&seed);
    return result;
}

static PyMethodDef module_methods[] = {
    {"p_hash", p_hash, METH_VARARGS,
     "p_hash(digest, secret, label, seed, length): the TLS 1.2 PRF, P_hash(secret, label + seed) (RFC 5246 5)"},
    {NULL},
};

static PyMethodDef Context_methods[] = {
    {"encrypt", (PyCFunction)Context_encrypt, METH_VARARGS,
     "encrypt(nonce, data, associated_data) -> ciphertext + 16-byte tag (a sealing context only)"},
    {"decrypt", (PyCFunction)Context_decrypt, METH_VARARGS,
     "decrypt(nonce, data, associated_data) -> plaintext; InvalidTag if it does not authenticate "
     "(an opening context only)"},
    {"seal_record", (PyCFunction)Context_seal_record, METH_VARARGS,
     "seal_record(content_type, version, epoch_seq, fixed_iv, plaintext) -> one whole DTLS record: header, "
     "explicit nonce (a 4-byte fixed IV: GCM), ciphertext and tag; epoch_seq is epoch << 48 | sequence"},
    {"open_record", (PyCFunction)Context_open_record, METH_VARARGS,
     "open_record(record, fixed_iv, version) -> the plaintext of one whole DTLS record, or None when it "
     "does not authenticate or its length cannot be (epoch and replay checks are the caller's)"},
    {"seal_tls_record", (PyCFunction)Context_seal_tls_record, METH_VARARGS,
     "seal_tls_record(content_type, version, sequence, fixed_iv, plaintext) -> one whole TLS 1.2 record: "
     "the 5-byte header, explicit nonce (GCM: the sequence number), ciphertext and tag"},
    {"open_tls_record", (PyCFunction)Context_open_tls_record, METH_VARARGS,
     "open_tls_record(record, sequence, fixed_iv, version) -> the plaintext of one whole TLS 1.2 record, or "
     "None when it does not authenticate or its length cannot be (the header's checks are the caller's)"},
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
    PyModuleDef_HEAD_INIT, "_aead", "One direction of a DTLS record layer's AEAD over OpenSSL's EVP; the TLS 1.2 PRF.",
    -1, module_methods,
};

PyMODINIT_FUNC PyInit__aead(void) {
    PyObject *exceptions = PyImport_ImportModule("cryptography.exceptions");
    if (exceptions == NULL)
        return NULL;
    invalid_tag = PyObject_GetAttrString(exceptions, "InvalidTag");
    Py_DECREF(exceptions);
    if (invalid_tag == NULL || PyType_Ready(&ContextType) < 0)
        return NULL;
    sha256 = EVP_MD_fetch(NULL, "SHA2-256", NULL);
    sha384 = EVP_MD_fetch(NULL, "SHA2-384", NULL);
    prf_inner = EVP_MD_CTX_new();
    prf_outer = EVP_MD_CTX_new();
    prf_scratch = EVP_MD_CTX_new();
    if (sha256 == NULL || sha384 == NULL || prf_inner == NULL || prf_outer == NULL || prf_scratch == NULL) {
        PyErr_SetString(PyExc_ImportError, "OpenSSL has no SHA-256 or SHA-384");
        return NULL;
    }
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
