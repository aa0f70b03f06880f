/* Corpus replay: runs a fuzz target's LLVMFuzzerTestOneInput over seed files, so every build checks the fuzzers' regression inputs without libFuzzer. */
#define _GNU_SOURCE
#include <dirent.h>
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerInitialize(int *argc, char ***argv) __attribute__((weak));

static int replay_file(const char *path)
{
	FILE *file = fopen(path, "rb");
	if (!file) {
		fprintf(stderr, "replay: cannot open '%s': %s\n", path, strerror(errno));
		return -1;
	}
	uint8_t *data = NULL;
	size_t size = 0, capacity = 0;
	for (;;) {
		if (size == capacity) {
			capacity = capacity ? capacity * 2 : 4096;
			uint8_t *grown = realloc(data, capacity);
			if (!grown) {
				free(data);
				fclose(file);
				return -1;
			}
			data = grown;
		}
		size_t n = fread(data + size, 1, capacity - size, file);
		size += n;
		if (n == 0)
			break;
	}
	fclose(file);
	/* An exact-size copy, so a read past the input's end is caught by
	 * sanitizers in builds that have them. */
	uint8_t *exact = malloc(size ? size : 1);
	if (!exact) {
		free(data);
		return -1;
	}
	memcpy(exact, data, size);
	free(data);
	LLVMFuzzerTestOneInput(exact, size);
	free(exact);
	return 0;
}

static int by_name(const struct dirent **a, const struct dirent **b)
{
	return strcmp((*a)->d_name, (*b)->d_name);
}

int main(int argc, char **argv)
{
	if (argc < 2) {
		fprintf(stderr, "usage: %s CORPUS_DIR_OR_FILE...\n", argv[0]);
		return 2;
	}
	if (LLVMFuzzerInitialize)
		LLVMFuzzerInitialize(&argc, &argv);
	unsigned replayed = 0, failed = 0;
	for (int i = 1; i < argc; i++) {
		struct stat st;
		if (stat(argv[i], &st) < 0) {
			fprintf(stderr, "replay: '%s': %s\n", argv[i], strerror(errno));
			failed++;
			continue;
		}
		if (!S_ISDIR(st.st_mode)) {
			failed += replay_file(argv[i]) < 0;
			replayed++;
			continue;
		}
		struct dirent **entries;
		int count = scandir(argv[i], &entries, NULL, by_name);
		if (count < 0) {
			fprintf(stderr, "replay: cannot list '%s': %s\n", argv[i], strerror(errno));
			failed++;
			continue;
		}
		for (int k = 0; k < count; k++) {
			char path[4096];
			snprintf(path, sizeof(path), "%s/%s", argv[i], entries[k]->d_name);
			if (entries[k]->d_name[0] != '.' && stat(path, &st) == 0 &&
			    S_ISREG(st.st_mode)) {
				failed += replay_file(path) < 0;
				replayed++;
			}
			free(entries[k]);
		}
		free(entries);
	}
	/* A corpus that went missing must not pass as "nothing failed". */
	if (replayed == 0) {
		fprintf(stderr, "replay: no inputs found\n");
		failed++;
	}
	printf("%u passed, %u failed\n", replayed - (failed < replayed ? failed : replayed),
	       failed);
	return failed ? 1 : 0;
}
