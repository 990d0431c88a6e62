/* SPDX-License-Identifier: MIT */
/*
 * Replays fuzz inputs without libFuzzer, so the corpus runs under ctest with gcc (and under
 * the sanitizers):
 *   fuzz_replay FILE|DIR...        runs every input; also every truncation of each input
 *                                  and a bit flip in every byte of inputs up to 4 KiB
 *   fuzz_replay --make-seed FILE   writes a valid stream to FILE
 */
#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include <cpr/cpr.h>

#include "fuzz.h"

static int read_file(const char *path, uint8_t **data, size_t *len)
{
    FILE *f = fopen(path, "rb");
    if (!f)
        return -1;
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fseek(f, 0, SEEK_SET);
    *data = malloc(n > 0 ? (size_t)n : 1);
    *len = fread(*data, 1, (size_t)(n > 0 ? n : 0), f);
    fclose(f);
    return 0;
}

static unsigned long runs;

static void replay(const uint8_t *data, size_t len)
{
    LLVMFuzzerTestOneInput(data, len);
    runs++;
    for (size_t cut = 0; cut < len; cut += 1 + len / 512) {
        LLVMFuzzerTestOneInput(data, cut);
        runs++;
    }
    if (len > 4096)
        return;
    uint8_t *copy = malloc(len ? len : 1);
    memcpy(copy, data, len);
    for (size_t i = 0; i < len; i++) {
        copy[i] ^= (uint8_t)(1u << (i % 8));
        LLVMFuzzerTestOneInput(copy, len);
        copy[i] = data[i];
        runs++;
    }
    free(copy);
}

static int replay_path(const char *path)
{
    struct stat st;
    if (stat(path, &st) < 0) {
        perror(path);
        return -1;
    }
    if (S_ISDIR(st.st_mode)) {
        DIR *d = opendir(path);
        struct dirent *e;
        int ret = 0;
        while (d && (e = readdir(d))) {
            if (e->d_name[0] == '.')
                continue;
            char sub[4096];
            snprintf(sub, sizeof(sub), "%s/%s", path, e->d_name);
            ret |= replay_path(sub);
        }
        if (d)
            closedir(d);
        return ret;
    }
    uint8_t *data;
    size_t len;
    if (read_file(path, &data, &len) < 0) {
        perror(path);
        return -1;
    }
    replay(data, len);
    free(data);
    return 0;
}

int main(int argc, char **argv)
{
    if (argc == 3 && strcmp(argv[1], "--make-seed") == 0) {
        void *data;
        size_t len;
        if (!fuzz_load_make_seed || fuzz_load_make_seed(&data, &len) < 0)
            return 1;
        FILE *f = fopen(argv[2], "wb");
        int ok = f && fwrite(data, 1, len, f) == len;
        if (f)
            fclose(f);
        cpr_free(data);
        return ok ? 0 : 1;
    }
    int ret = 0;
    for (int i = 1; i < argc; i++)
        ret |= replay_path(argv[i]);
    printf("replayed %lu inputs\n", runs);
    return ret ? 1 : 0;
}
