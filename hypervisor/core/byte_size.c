/* Sizes written the way operators write them (64M, 1GiB...), for memory sizes and file caps alike. */
#include "core/byte_size.h"

#include <ctype.h>
#include <errno.h>
#include <stdlib.h>

int byte_size_parse(const char *text, uint64_t *bytes)
{
	char *end;
	unsigned shift = 0;

	if (!text || !isdigit((unsigned char)text[0]))
		return -EINVAL;
	errno = 0;
	unsigned long long value = strtoull(text, &end, 10);
	if (errno)
		return -ERANGE;
	switch (toupper((unsigned char)*end)) {
	case '\0':
		break;
	case 'K':
		shift = 10;
		break;
	case 'M':
		shift = 20;
		break;
	case 'G':
		shift = 30;
		break;
	default:
		return -EINVAL;
	}
	if (*end) {
		end++;
		/* Accept "M", "MB", "MiB" (and K/G likewise). */
		if (*end == 'i' || *end == 'I')
			end++;
		if (*end == 'b' || *end == 'B')
			end++;
		if (*end)
			return -EINVAL;
	}
	if (value > (UINT64_MAX >> shift))
		return -ERANGE;
	*bytes = (uint64_t)value << shift;
	return 0;
}
