/* The C floor of bench_dtls.py: N DTLS 1.2 PSK handshakes, client and server in one process,
 * in memory (memory BIOs, no sockets), with OpenSSL. Same flights as loadgen's native engine
 * against its reference server: ClientHello, HelloVerifyRequest (cookie exchange), ClientHello
 * with cookie, ServerHello+ServerHelloDone, ClientKeyExchange+CCS+Finished, CCS+Finished, with
 * the suite loadgen negotiates by default (PSK-AES128-GCM-SHA256) and the extended master secret.
 *
 * Each side's calls (SSL_new .. SSL_free included) are timed apart with
 * clock_gettime(CLOCK_PROCESS_CPUTIME_ID); output: "client_us X" and "server_us Y", the mean
 * CPU microseconds per handshake of each side, and "handshakes N".
 *
 *   gcc -O2 -o dtls_psk_pair dtls_psk_pair.c -lssl -lcrypto && ./dtls_psk_pair 2000
 */
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static const unsigned char KEY[16] = "loadgen-c-floor!";
static const char *SUITE = "PSK-AES128-GCM-SHA256";

static double now(void) {
    struct timespec t;
    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &t);
    return t.tv_sec + t.tv_nsec * 1e-9;
}

static unsigned int client_psk(SSL *ssl, const char *hint, char *identity, unsigned int max_identity,
                               unsigned char *psk, unsigned int max_psk) {
    (void)ssl; (void)hint;
    if (max_identity < 6 || max_psk < sizeof KEY) return 0;
    strcpy(identity, "bench");
    memcpy(psk, KEY, sizeof KEY);
    return sizeof KEY;
}

static unsigned int server_psk(SSL *ssl, const char *identity, unsigned char *psk, unsigned int max_psk) {
    (void)ssl;
    if (strcmp(identity, "bench") != 0 || max_psk < sizeof KEY) return 0;
    memcpy(psk, KEY, sizeof KEY);
    return sizeof KEY;
}

/* A fixed cookie: the floor counts the exchange's flights, not a MAC over the peer address. */
static int make_cookie(SSL *ssl, unsigned char *cookie, unsigned int *len) {
    (void)ssl;
    memcpy(cookie, "cookie-cookie-cookie", 20);
    *len = 20;
    return 1;
}

static int check_cookie(SSL *ssl, const unsigned char *cookie, unsigned int len) {
    (void)ssl;
    return len == 20 && memcmp(cookie, "cookie-cookie-cookie", 20) == 0;
}

static SSL_CTX *context(int server) {
    SSL_CTX *ctx = SSL_CTX_new(server ? DTLS_server_method() : DTLS_client_method());
    if (!ctx) return NULL;
    SSL_CTX_set_min_proto_version(ctx, DTLS1_2_VERSION);
    SSL_CTX_set_max_proto_version(ctx, DTLS1_2_VERSION);
    if (!SSL_CTX_set_cipher_list(ctx, SUITE)) return NULL;
    SSL_CTX_set_options(ctx, SSL_OP_NO_QUERY_MTU | SSL_OP_NO_TICKET);
    if (server) {
        SSL_CTX_set_psk_server_callback(ctx, server_psk);
        SSL_CTX_use_psk_identity_hint(ctx, "loadgen");
        SSL_CTX_set_options(ctx, SSL_OP_COOKIE_EXCHANGE);
        SSL_CTX_set_cookie_generate_cb(ctx, make_cookie);
        SSL_CTX_set_cookie_verify_cb(ctx, check_cookie);
        SSL_CTX_set_session_cache_mode(ctx, SSL_SESS_CACHE_OFF);
    } else {
        SSL_CTX_set_psk_client_callback(ctx, client_psk);
    }
    return ctx;
}

static SSL *endpoint(SSL_CTX *ctx, int server, BIO **in, BIO **out) {
    SSL *ssl = SSL_new(ctx);
    *in = BIO_new(BIO_s_mem());
    *out = BIO_new(BIO_s_mem());
    BIO_set_mem_eof_return(*in, -1); /* empty means "would block", not EOF */
    BIO_set_mem_eof_return(*out, -1);
    SSL_set_bio(ssl, *in, *out);
    SSL_set_mtu(ssl, 1400);
    if (server) SSL_set_accept_state(ssl); else SSL_set_connect_state(ssl);
    return ssl;
}

/* Moves what `from` wrote into `to`'s input; returns the bytes moved. */
static long pump(BIO *from, BIO *to) {
    char buf[16384];
    long total = 0;
    int n;
    while ((n = BIO_read(from, buf, sizeof buf)) > 0) {
        BIO_write(to, buf, n);
        total += n;
    }
    return total;
}

static int one_handshake(SSL_CTX *cctx, SSL_CTX *sctx, double *client_cpu, double *server_cpu) {
    BIO *cin, *cout, *sin, *sout;
    double t0 = now();
    SSL *c = endpoint(cctx, 0, &cin, &cout);
    int cdone = SSL_do_handshake(c) == 1;
    double t1 = now();
    SSL *s = endpoint(sctx, 1, &sin, &sout);
    int sdone = 0;
    double t2 = now();
    *client_cpu += t1 - t0;
    *server_cpu += t2 - t1;
    for (int round = 0; round < 20 && !(cdone && sdone); round++) {
        pump(cout, sin);
        t0 = now();
        if (!sdone) sdone = SSL_do_handshake(s) == 1;
        t1 = now();
        pump(sout, cin);
        if (!cdone) cdone = SSL_do_handshake(c) == 1;
        t2 = now();
        *server_cpu += t1 - t0;
        *client_cpu += t2 - t1;
    }
    /* Outside the timing: the floor is only a floor if it ran the suite loadgen runs. */
    int same = cdone && strcmp(SSL_CIPHER_get_name(SSL_get_current_cipher(c)), SUITE) == 0
               && SSL_get_extms_support(c) == 1;
    t0 = now();
    SSL_free(c);
    t1 = now();
    SSL_free(s);
    t2 = now();
    *client_cpu += t1 - t0;
    *server_cpu += t2 - t1;
    return same && sdone;
}

int main(int argc, char **argv) {
    long n = argc > 1 ? strtol(argv[1], NULL, 10) : 2000;
    if (n <= 0) {
        fprintf(stderr, "dtls_psk_pair: the handshake count must be a positive integer, not %s\n", argv[1]);
        return 2;
    }
    SSL_CTX *cctx = context(0), *sctx = context(1);
    if (!cctx || !sctx) {
        fprintf(stderr, "dtls_psk_pair: cannot set up the OpenSSL contexts (%s)\n", SUITE);
        ERR_print_errors_fp(stderr);
        return 1;
    }
    double client_cpu = 0, server_cpu = 0;
    for (long i = 0; i < n; i++) {
        if (!one_handshake(cctx, sctx, &client_cpu, &server_cpu)) {
            fprintf(stderr, "dtls_psk_pair: handshake %ld did not complete with %s and the extended master secret\n", i, SUITE);
            ERR_print_errors_fp(stderr);
            return 1;
        }
    }
    printf("client_us %.2f\nserver_us %.2f\nhandshakes %ld\n", client_cpu / n * 1e6, server_cpu / n * 1e6, n);
    SSL_CTX_free(cctx);
    SSL_CTX_free(sctx);
    return 0;
}
