/* Each error path of the C ABI, called from C (run by tests/c_programs.rs,
 * also under valgrind): every failing call must return its status and leave a
 * message, and nothing may leak. argv[1] is a valid model file.
 * Exit status: 0 when every check held, 1 naming the first that did not. */
#include <stdio.h>
#include <string.h>

#include "gpt_fast.h"

static int failures = 0;

static void expect(const char *what, GfStatus got, GfStatus want) {
    const char *message = gf_last_error();
    if (got != want || (want != GF_STATUS_OK) != (message[0] != '\0')) {
        fprintf(stderr, "error_paths: %s: status %d (wanted %d), message \"%s\"\n", what, got, want, message);
        failures += 1;
    } else if (want != GF_STATUS_OK) {
        printf("%s: %s\n", what, message);
    }
}

int main(int argc, char **argv) {
    if (argc != 2) {
        fprintf(stderr, "usage: error_paths MODEL\n");
        return 2;
    }
    GfModel *model = NULL;
    expect("missing file", gf_model_open("/no/such/model.bin", &model), GF_STATUS_MODEL);
    expect("null path", gf_model_open(NULL, &model), GF_STATUS_INVALID_ARGUMENT);
    expect("null out", gf_model_open(argv[1], NULL), GF_STATUS_INVALID_ARGUMENT);
    expect("open", gf_model_open(argv[1], &model), GF_STATUS_OK);
    if (model == NULL) {
        return 1;
    }
    size_t vocab = gf_model_n_vocab(model);

    GfSession *session = NULL;
    expect("context too large", gf_session_new(model, 100000, 1, &session), GF_STATUS_SESSION);
    expect("null model", gf_session_new(NULL, 64, 1, &session), GF_STATUS_INVALID_ARGUMENT);
    expect("session", gf_session_new(model, 64, 1, &session), GF_STATUS_OK);
    if (session == NULL) {
        gf_model_free(model);
        return 1;
    }

    uint32_t ids[64];
    size_t n = 0;
    expect("buffer too small", gf_tokenize(model, "hello world", true, false, ids, 1, &n), GF_STATUS_BUFFER_TOO_SMALL);
    expect("null text", gf_tokenize(model, NULL, true, false, ids, 64, &n), GF_STATUS_INVALID_ARGUMENT);
    expect("not UTF-8", gf_tokenize(model, "\xff\xfe", true, false, ids, 64, &n), GF_STATUS_INVALID_ARGUMENT);
    expect("tokenize", gf_tokenize(model, "hello world", true, false, ids, 64, &n), GF_STATUS_OK);

    const float *logits = NULL;
    uint32_t out_of_range = 0xffffffffu;
    expect("token out of range", gf_eval(session, &out_of_range, 1, &logits), GF_STATUS_SESSION);
    expect("eval", gf_eval(session, ids, n, &logits), GF_STATUS_OK);

    GfSamplerParams params = gf_sampler_default();
    uint32_t token = 0;
    expect("wrong logits length", gf_sample(session, &params, logits, vocab - 1, &token), GF_STATUS_INVALID_ARGUMENT);
    GfSamplerParams negative_top_p = params;
    negative_top_p.top_p = -1.0f;
    expect("bad sampler settings", gf_sample(session, &negative_top_p, logits, vocab, &token),
           GF_STATUS_INVALID_ARGUMENT);
    expect("sample", gf_sample(session, &params, logits, vocab, &token), GF_STATUS_OK);
    expect("decode out of range", gf_decode(session, out_of_range, &logits), GF_STATUS_SESSION);
    expect("decode null logits", gf_decode(session, token, NULL), GF_STATUS_INVALID_ARGUMENT);
    expect("decode", gf_decode(session, token, &logits), GF_STATUS_OK);
    expect("sample after decode", gf_sample(session, &params, logits, vocab, &token), GF_STATUS_OK);

    expect("reset", gf_session_reset(session), GF_STATUS_OK);
    expect("empty prompt", gf_generate(session, "", 4, &params, NULL, NULL, NULL), GF_STATUS_GENERATE);
    expect("null params", gf_generate(session, "hi", 4, NULL, NULL, NULL, NULL), GF_STATUS_INVALID_ARGUMENT);
    expect("generate", gf_generate(session, "hi", 2, &params, NULL, NULL, NULL), GF_STATUS_OK);

    gf_session_free(session);
    gf_model_free(model);
    gf_session_free(NULL);
    gf_model_free(NULL);
    return failures == 0 ? 0 : 1;
}
