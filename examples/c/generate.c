/* Embedding gpt-fast from C: open a model, create a session, stream a
 * completion through a callback, then continue the conversation by hand
 * (tokenize, eval, sample).
 *
 *     cc -O2 -I capi/include examples/c/generate.c target/release/libgpt_fast_capi.a \
 *        -lpthread -ldl -lm -o generate
 *     ./generate smollm2-q8.bin "The capital of France is" 16
 *
 * Every call returns a status; on failure gf_last_error() says what went
 * wrong. Exit status: 0 on success, 1 on a gpt-fast error, 2 on bad usage. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "gpt_fast.h"

/* Returns non-zero to stop generation: after `limit` pieces if set. */
struct printer {
    size_t pieces;
    size_t limit;
};

static int print_piece(const char *piece, size_t len, void *user) {
    struct printer *p = user;
    fwrite(piece, 1, len, stdout);
    fflush(stdout);
    p->pieces += 1;
    return p->limit != 0 && p->pieces >= p->limit;
}

static int fail(const char *what) {
    fprintf(stderr, "generate: %s: %s\n", what, gf_last_error());
    return 1;
}

int main(int argc, char **argv) {
    if (argc < 3 || argc > 5) {
        fprintf(stderr, "usage: generate MODEL PROMPT [MAX_TOKENS [STOP_AFTER_PIECES]]\n");
        return 2;
    }
    size_t max_tokens = argc > 3 ? strtoul(argv[3], NULL, 10) : 32;
    struct printer printer = {0, argc > 4 ? strtoul(argv[4], NULL, 10) : 0};

    GfModel *model = NULL;
    if (gf_model_open(argv[1], &model) != GF_STATUS_OK) {
        return fail("opening the model");
    }
    GfSession *session = NULL;
    if (gf_session_new(model, 0, 2, &session) != GF_STATUS_OK) {
        int rc = fail("creating a session");
        gf_model_free(model);
        return rc;
    }
    int rc = 0;
    uint32_t *ids = NULL;
    GfSamplerParams greedy = gf_sampler_default();
    greedy.temperature = 0.0f;

    GfGenerateStats stats;
    fputs(argv[2], stdout);
    if (gf_generate(session, argv[2], max_tokens, &greedy, print_piece, &printer, &stats) != GF_STATUS_OK) {
        rc = fail("generating");
        goto out;
    }
    printf("\n");
    fprintf(stderr, "%zu prompt tokens in %.3f s, %zu generated in %.3f s%s\n", stats.prompt_tokens,
            stats.prompt_seconds, stats.generated_tokens, stats.generate_seconds,
            stats.cancelled ? " (stopped by the callback)" : "");

    /* The same conversation continued token by token: ask how many ids the
     * text needs, then evaluate them and pick the next token. */
    const char *more = " In short,";
    size_t n_ids = 0;
    if (gf_tokenize(model, more, false, false, NULL, 0, &n_ids) != GF_STATUS_BUFFER_TOO_SMALL) {
        rc = fail("sizing the tokens");
        goto out;
    }
    ids = malloc(n_ids * sizeof *ids);
    if (ids == NULL || gf_tokenize(model, more, false, false, ids, n_ids, &n_ids) != GF_STATUS_OK) {
        rc = ids == NULL ? 1 : fail("tokenizing");
        goto out;
    }
    const float *logits = NULL;
    uint32_t next = 0;
    if (gf_eval(session, ids, n_ids, &logits) != GF_STATUS_OK ||
        gf_sample(session, &greedy, logits, gf_model_n_vocab(model), &next) != GF_STATUS_OK) {
        rc = fail("continuing");
        goto out;
    }
    fprintf(stderr, "after %zu more tokens the most likely next token is %u\n", n_ids, next);

out:
    free(ids);
    gf_session_free(session);
    gf_model_free(model);
    return rc;
}
