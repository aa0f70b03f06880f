/* Look up "key=value" words on a guest command line (pure: no platform access, testable on the host). */
#include "kapsel/abi.h"
#include "kapsel_guest/libc.h"

int kg_cmdline_value(const char *cmdline, const char *key, char *value, size_t value_size)
{
	size_t key_len = 0;
	while (key[key_len])
		key_len++;
	const char *p = cmdline;
	while (*p) {
		while (*p == ' ')
			p++;
		const char *word = p;
		while (*p && *p != ' ')
			p++;
		size_t word_len = (size_t)(p - word);
		if (word_len <= key_len || word[key_len] != '=')
			continue;
		size_t i = 0;
		while (i < key_len && word[i] == key[i])
			i++;
		if (i != key_len)
			continue;
		size_t length = word_len - key_len - 1;
		if (length >= value_size) {
			if (value_size)
				value[0] = '\0';
			return -KAPSEL_E2BIG;
		}
		for (i = 0; i < length; i++)
			value[i] = word[key_len + 1 + i];
		value[length] = '\0';
		return (int)length;
	}
	if (value_size)
		value[0] = '\0';
	return -KAPSEL_ENOENT;
}
