/* Token-bucket rate limiting shared by the devices (block, net, entropy): one bucket per counted unit. */
#include "devices/rate_limit.h"

#define NS_PER_SECOND 1000000000ull

void token_bucket_init(struct token_bucket *bucket, const struct vm_rate_limit *limit,
		       uint64_t now_ns)
{
	bucket->rate_per_second = limit ? limit->rate_per_second : 0;
	bucket->burst = limit && limit->burst ? limit->burst : bucket->rate_per_second;
	bucket->tokens = bucket->burst;
	bucket->debt = 0;
	bucket->last_refill_ns = now_ns;
}

static void token_bucket_refill(struct token_bucket *bucket, uint64_t now_ns)
{
	if (now_ns <= bucket->last_refill_ns)
		return;
	uint64_t elapsed = now_ns - bucket->last_refill_ns;
	/* tokens = elapsed * rate / 1e9 without overflow for sane rates. */
	unsigned __int128 add =
		(unsigned __int128)elapsed * bucket->rate_per_second / NS_PER_SECOND;
	if (add == 0)
		return; /* keep last_refill_ns so fractions accumulate */
	if (add > UINT64_MAX)
		add = UINT64_MAX;
	/* Credit only the time the whole tokens stand for, so the fraction
	 * of a token earned so far is not lost (exact for low rates). */
	unsigned __int128 credited_ns = add * NS_PER_SECOND / bucket->rate_per_second;
	bucket->last_refill_ns += credited_ns < elapsed ? (uint64_t)credited_ns : elapsed;
	uint64_t fresh = (uint64_t)add;
	uint64_t repaid = fresh < bucket->debt ? fresh : bucket->debt;
	bucket->debt -= repaid;
	fresh -= repaid;
	unsigned __int128 total = (unsigned __int128)bucket->tokens + fresh;
	if (total >= bucket->burst) {
		/* A full bucket earns nothing: time spent full is not banked. */
		bucket->tokens = bucket->burst;
		bucket->last_refill_ns = now_ns;
	} else {
		bucket->tokens = (uint64_t)total;
	}
}

uint64_t token_bucket_take(struct token_bucket *bucket, uint64_t amount, uint64_t now_ns)
{
	if (bucket->rate_per_second == 0)
		return 0;
	token_bucket_refill(bucket, now_ns);
	uint64_t need = amount < bucket->burst ? amount : bucket->burst;
	if (bucket->debt == 0 && bucket->tokens >= need) {
		/* An oversize request empties a full bucket and owes the rest,
		 * which the refill pays back before the bucket fills again. */
		bucket->tokens -= need;
		bucket->debt = amount - need;
		return 0;
	}
	/* Debt is only ever owed by an empty bucket (refill pays it first). */
	unsigned __int128 missing = (unsigned __int128)bucket->debt + need - bucket->tokens;
	unsigned __int128 wait =
		(missing * NS_PER_SECOND + bucket->rate_per_second - 1) / bucket->rate_per_second;
	/* Time already earned towards the next token shortens the wait. */
	uint64_t earned = now_ns > bucket->last_refill_ns ? now_ns - bucket->last_refill_ns : 0;
	wait = wait > earned ? wait - earned : 1;
	return wait > UINT64_MAX ? UINT64_MAX : (uint64_t)wait;
}

uint64_t token_bucket_take_request(struct token_bucket *ops, struct token_bucket *bytes,
				   uint64_t length_bytes, uint64_t now_ns)
{
	uint64_t wait = token_bucket_take(ops, 1, now_ns);
	if (wait)
		return wait;
	wait = token_bucket_take(bytes, length_bytes, now_ns);
	/* Give the op token back: the request did not go. */
	if (wait && ops->rate_per_second && ops->tokens < ops->burst)
		ops->tokens++;
	return wait;
}
