/*
 * generate.c: greedy generation through libminimax's C API.
 *
 *   generate [--model PATH] [--backend auto|gpu|cpu|vulkan|metal|dx12|gl] [--max-tokens N] PROMPT
 *
 * Streams the generated text to stderr and prints the generated ids, comma-separated, on stdout
 * (the format of `minimax run --format ids`). Without --model it runs the embedded demo model.
 * On failure the exit code is the minimax_status. Build (from the repository root):
 *
 *   cargo build --release -p minimax-native
 *   cc -Inative/include native/examples/c/generate.c -Ltarget/release -lminimax \
 *      -Wl,-rpath,"$PWD/target/release" -o generate
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "minimax.h"

static bool print_piece(uint32_t token, const char *text_piece, void *user_data) {
    (void)token;
    (void)user_data;
    if (text_piece != NULL) { /* NULL when the model has no tokenizer */
        fputs(text_piece, stderr);
        fflush(stderr);
    }
    return true; /* false would stop generation */
}

static int parse_backend(const char *name, minimax_backend *out) {
    static const struct { const char *name; minimax_backend value; } names[] = {
        {"auto", MINIMAX_BACKEND_AUTO},     {"gpu", MINIMAX_BACKEND_GPU},
        {"cpu", MINIMAX_BACKEND_CPU},       {"vulkan", MINIMAX_BACKEND_VULKAN},
        {"metal", MINIMAX_BACKEND_METAL},   {"dx12", MINIMAX_BACKEND_DX12},
        {"gl", MINIMAX_BACKEND_GL},
    };
    for (size_t i = 0; i < sizeof names / sizeof names[0]; i++) {
        if (strcmp(name, names[i].name) == 0) {
            *out = names[i].value;
            return 1;
        }
    }
    return 0;
}

static int usage(void) {
    fputs("usage: generate [--model PATH] [--backend NAME] [--max-tokens N] PROMPT\n", stderr);
    return 64; /* EX_USAGE, above every minimax_status */
}

int main(int argc, char **argv) {
    const char *model_path = NULL; /* NULL: the embedded demo model */
    const char *prompt = NULL;
    minimax_params params = minimax_default_params();
    params.temperature = 0.0f; /* greedy (the default, spelled out) */
    for (int i = 1; i < argc; i++) {
        const char *value = i + 1 < argc ? argv[i + 1] : NULL;
        if (strcmp(argv[i], "--model") == 0 && value) {
            model_path = argv[++i];
        } else if (strcmp(argv[i], "--backend") == 0 && value) {
            if (!parse_backend(argv[++i], &params.backend)) return usage();
        } else if (strcmp(argv[i], "--max-tokens") == 0 && value) {
            params.max_tokens = (uint32_t)strtoul(argv[++i], NULL, 10);
        } else if (argv[i][0] != '-' && prompt == NULL) {
            prompt = argv[i];
        } else {
            return usage();
        }
    }
    if (prompt == NULL) return usage();

    minimax_model *model = NULL;
    minimax_context *context = NULL;
    uint32_t *prompt_ids = NULL, *ids = NULL;
    size_t n_prompt = 0, n_generated = 0;
    const char *step = "loading the model";
    minimax_status status = minimax_model_load(model_path, &params, &model);
    if (status != MINIMAX_STATUS_OK) goto done;

    /* Capacity 0 asks for the number of ids; the second call fills the array. */
    step = "tokenizing the prompt";
    status = minimax_tokenize(model, prompt, NULL, 0, &n_prompt);
    if (status != MINIMAX_STATUS_BUFFER_TOO_SMALL && status != MINIMAX_STATUS_OK) goto done;
    prompt_ids = malloc((n_prompt + 1) * sizeof *prompt_ids);
    ids = malloc(((size_t)params.max_tokens + 1) * sizeof *ids);
    if (prompt_ids == NULL || ids == NULL) {
        fputs("error: out of memory\n", stderr);
        return 1;
    }
    status = minimax_tokenize(model, prompt, prompt_ids, n_prompt, &n_prompt);
    if (status != MINIMAX_STATUS_OK) goto done;

    step = "generating";
    status = minimax_context_new(model, &context);
    if (status != MINIMAX_STATUS_OK) goto done;
    fputs(prompt, stderr);
    status = minimax_generate(context, prompt_ids, n_prompt, &params, print_piece, NULL, ids,
                              params.max_tokens, &n_generated);
    fputc('\n', stderr);
    if (status != MINIMAX_STATUS_OK) goto done;
    for (size_t i = 0; i < n_generated; i++) printf(i ? ",%u" : "%u", (unsigned)ids[i]);
    printf("\n");

done:
    if (status != MINIMAX_STATUS_OK) {
        fprintf(stderr, "error: %s failed (status %d): %s\n", step, (int)status, minimax_last_error());
    }
    minimax_context_free(context); /* NULL is fine */
    minimax_model_free(model);
    free(prompt_ids);
    free(ids);
    return (int)status;
}
