/*
 * Arbitrary bytes as a kubeconfig. File references are disabled (base_dir
 * ""), so the target never opens a path the input names. Beyond "no crash,
 * leak or UB": a success yields an http(s) server without a trailing slash,
 * a failure explains itself and leaves nothing allocated in the result, and
 * a client certificate never comes without its key.
 */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "upmon/k8s.h"
#include "upmon/log.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct upm_k8s_creds c;
    char err[256];
    char *copy = malloc(size ? size : 1); /* exactly sized: ASan sees overreads */
    int rc;

    upm_log_set_level(UPM_LOG_OFF);
    if (size)
        memcpy(copy, data, size);
    err[0] = '\0';
    rc = upm_k8s_kubeconfig_parse(copy, size, "", &c, err, sizeof(err));
    if (rc == 0) {
        size_t l = strlen(c.server);
        if (l == 0 || c.server[l - 1] == '/')
            __builtin_trap();
        if (strncmp(c.server, "https://", 8) != 0 && strncmp(c.server, "http://", 7) != 0)
            __builtin_trap();
        if ((c.cert.len == 0) != (c.key.len == 0))
            __builtin_trap();
    } else {
        if (rc != -1 || err[0] == '\0' || c.server || c.token)
            __builtin_trap();
    }
    upm_k8s_creds_free(&c);
    free(copy);
    return 0;
}
