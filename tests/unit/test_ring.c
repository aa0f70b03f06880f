/* Unit tests of the shared ring: the guest frontend (guest-pv/lib/ring.c) against the host backend (ring_backend.c), no KVM. */
#define _GNU_SOURCE
#include <errno.h>
#include <pthread.h>
#include <semaphore.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "cunit_main.h"
#include "kapsel/abi.h"
#include "kapsel/blk.h"
#include "kapsel_guest/ring.h"
#include "devices/ring_backend.h"

#define RAM_BYTES (1u << 20)
#define RING_GPA 0x10000u
#define REQ_BYTES ((uint32_t)sizeof(struct kapsel_blk_request))
#define RSP_BYTES ((uint32_t)sizeof(struct kapsel_blk_response))

static uint8_t *ram;
static struct guest_memory mem;

static void ram_reset(void)
{
	if (!ram)
		ram = aligned_alloc(4096, RAM_BYTES);
	memset(ram, 0, RAM_BYTES);
	mem = (struct guest_memory){ .memfd = -1, .host_base = ram, .size_bytes = RAM_BYTES };
}

/* A frontend ring of 2^order slots at RING_GPA starting at start. */
static uint32_t front_init(struct kg_ring *front, uint32_t order, uint32_t start)
{
	ram_reset();
	kg_ring_init(front, ram + RING_GPA, order, REQ_BYTES, RSP_BYTES, start);
	return kg_ring_pages(order, REQ_BYTES, RSP_BYTES);
}

static int back_map(struct ring_backend *back, uint32_t pages)
{
	return ring_backend_map(back, &mem, RING_GPA, pages, REQ_BYTES, RSP_BYTES);
}

/* ---- setup validation ----------------------------------------------------- */

static void test_map_validation(void)
{
	struct kg_ring front;
	struct ring_backend back;
	uint32_t pages = front_init(&front, 4, 0);
	/* 16 slots: 1 header page + 2 request pages + 1 response page. */
	CU_ASSERT_EQUAL(pages, 4);
	CU_ASSERT_EQUAL(back_map(&back, pages), 0);
	CU_ASSERT_EQUAL(back.size, 16);
	CU_ASSERT_PTR_EQUAL(back.requests, ram + RING_GPA + 4096);
	CU_ASSERT_PTR_EQUAL(back.responses, ram + RING_GPA + 3 * 4096);

	struct kapsel_ring_header *h = front.header;
	struct kapsel_ring_header good = *h;
#define EXPECT_REFUSED(change, expected)                           \
	do {                                                       \
		*h = good;                                         \
		change;                                            \
		CU_ASSERT_EQUAL(back_map(&back, pages), expected); \
	} while (0)
	EXPECT_REFUSED(h->magic++, -KAPSEL_EINVAL);
	EXPECT_REFUSED(h->revision = 2, -KAPSEL_EINVAL);
	EXPECT_REFUSED(h->order = 0, -KAPSEL_EINVAL);
	EXPECT_REFUSED(h->order = KAPSEL_RING_MAX_ORDER + 1, -KAPSEL_EINVAL);
	EXPECT_REFUSED(h->order = 31, -KAPSEL_EINVAL);
	EXPECT_REFUSED(h->order = 5, -KAPSEL_EINVAL); /* slots no longer fit */
	EXPECT_REFUSED(h->request_bytes = 64, -KAPSEL_EINVAL);
	EXPECT_REFUSED(h->response_bytes = 32, -KAPSEL_EINVAL);
	EXPECT_REFUSED(h->requests_offset = 4096 + 512, -KAPSEL_EINVAL);
	EXPECT_REFUSED(h->requests_offset = 0, -KAPSEL_EINVAL);
	EXPECT_REFUSED(h->responses_offset = 2 * 4096, -KAPSEL_EINVAL); /* overlap */
	EXPECT_REFUSED(h->responses_offset = 4 * 4096, -KAPSEL_EINVAL); /* past the ring */
	EXPECT_REFUSED(h->responses_offset = 0xfffff000u, -KAPSEL_EINVAL);
	EXPECT_REFUSED(h->req_prod = 3, -KAPSEL_EINVAL); /* requests pending at setup */
	*h = good;
	CU_ASSERT_EQUAL(back_map(&back, pages - 1), -KAPSEL_EINVAL);
	CU_ASSERT_EQUAL(back_map(&back, 0), -KAPSEL_EINVAL);
	CU_ASSERT_EQUAL(ring_backend_map(&back, &mem, RING_GPA + 512, pages, REQ_BYTES, RSP_BYTES),
			-KAPSEL_EINVAL);
	CU_ASSERT_EQUAL(ring_backend_map(&back, &mem, RAM_BYTES - 3 * 4096, pages, REQ_BYTES,
					 RSP_BYTES),
			-KAPSEL_EFAULT);
	CU_ASSERT_EQUAL(ring_backend_map(&back, &mem, 0xfffffffffffff000ull, 4, REQ_BYTES,
					 RSP_BYTES),
			-KAPSEL_EFAULT);
	CU_ASSERT_EQUAL(ring_backend_map(&back, &mem, RING_GPA, 0xffffffffu, REQ_BYTES, RSP_BYTES),
			-KAPSEL_EINVAL);
	/* The biggest ring maps too. */
	pages = front_init(&front, KAPSEL_RING_MAX_ORDER, 0);
	CU_ASSERT_EQUAL(back_map(&back, pages), 0);
	CU_ASSERT_EQUAL(back.size, 1u << KAPSEL_RING_MAX_ORDER);
}

/* ---- single-threaded behaviour ----------------------------------------------- */

static void push_request(struct kg_ring *front, uint64_t id)
{
	struct kapsel_blk_request *r = kg_ring_next_request(front);
	CU_ASSERT_PTR_NOT_NULL_FATAL(r);
	memset(r, 0, sizeof(*r));
	r->id = id;
	r->sector = id * 7;
	kg_ring_push_request(front);
}

/* Backend: take every pending request and answer it (status = -(id % 5)). */
static unsigned serve_all(struct ring_backend *back)
{
	unsigned served = 0;
	int pending;
	while ((pending = ring_backend_pending(back)) > 0) {
		for (int i = 0; i < pending; i++) {
			struct kapsel_blk_request req;
			ring_backend_take_request(back, &req);
			struct kapsel_blk_response rsp = { .id = req.id,
							   .status = -(int)(req.id % 5),
							   .submit_tsc = req.sector };
			ring_backend_put_response(back, &rsp);
			served++;
		}
	}
	return served;
}

static void check_ordering_from(uint32_t start)
{
	struct kg_ring front;
	struct ring_backend back;
	uint32_t pages = front_init(&front, 3, start);
	CU_ASSERT_EQUAL_FATAL(back_map(&back, pages), 0);
	CU_ASSERT_EQUAL(back.req_cons, start);

	uint64_t next_id = 0, expect_id = 0;
	for (int round = 0; round < 50; round++) {
		unsigned batch = 1 + (unsigned)(round % 8);
		for (unsigned i = 0; i < batch; i++)
			push_request(&front, next_id++);
		kg_ring_publish(&front);
		CU_ASSERT_EQUAL(serve_all(&back), batch);
		ring_backend_publish(&back);
		const struct kapsel_blk_response *rsp;
		unsigned got = 0;
		while ((rsp = kg_ring_peek_response(&front))) {
			CU_ASSERT_EQUAL(rsp->id, expect_id);
			CU_ASSERT_EQUAL(rsp->status, -(int)(expect_id % 5));
			CU_ASSERT_EQUAL(rsp->submit_tsc, expect_id * 7);
			expect_id++;
			got++;
			kg_ring_consume_response(&front);
		}
		CU_ASSERT_EQUAL(got, batch);
	}
	/* The indices really moved across the wrap (or ran from 0). */
	CU_ASSERT_EQUAL(front.header->req_prod, (uint32_t)(start + next_id));
	CU_ASSERT_EQUAL(front.header->rsp_prod, (uint32_t)(start + next_id));
	CU_ASSERT_FALSE(back.broken);
}

static void test_ordering(void)
{
	check_ordering_from(0);
}

static void test_wraparound(void)
{
	check_ordering_from(UINT32_MAX - 5);
	check_ordering_from(UINT32_MAX);
	check_ordering_from(0x80000000u - 3);
}

static void test_full_and_empty(void)
{
	struct kg_ring front;
	struct ring_backend back;
	uint32_t pages = front_init(&front, 2, UINT32_MAX - 1);
	CU_ASSERT_EQUAL_FATAL(back_map(&back, pages), 0);

	/* Empty: nothing for either side. */
	CU_ASSERT_EQUAL(ring_backend_pending(&back), 0);
	CU_ASSERT_PTR_NULL(kg_ring_peek_response(&front));
	CU_ASSERT_FALSE(ring_backend_publish(&back));

	/* Full after 4 outstanding requests, whatever the backend did. */
	for (uint64_t i = 0; i < 4; i++)
		push_request(&front, i);
	CU_ASSERT_PTR_NULL(kg_ring_next_request(&front));
	kg_ring_publish(&front);
	CU_ASSERT_EQUAL(ring_backend_pending(&back), 4);
	struct kapsel_blk_request req;
	ring_backend_take_request(&back, &req);
	ring_backend_take_request(&back, &req);
	CU_ASSERT_EQUAL(ring_backend_in_flight(&back), 2);
	CU_ASSERT_EQUAL(ring_backend_pending(&back), 2);
	/* Taken but unanswered requests still occupy the ring. */
	CU_ASSERT_PTR_NULL(kg_ring_next_request(&front));
	struct kapsel_blk_response rsp = { .id = 0 };
	ring_backend_put_response(&back, &rsp);
	ring_backend_publish(&back);
	CU_ASSERT_PTR_NULL(kg_ring_next_request(&front)); /* not consumed yet */
	CU_ASSERT_PTR_NOT_NULL(kg_ring_peek_response(&front));
	kg_ring_consume_response(&front);
	CU_ASSERT_PTR_NOT_NULL(kg_ring_next_request(&front));
	CU_ASSERT_EQUAL(kg_ring_outstanding(&front), 3);
	CU_ASSERT_FALSE(back.broken);
}

/* ---- event indices ------------------------------------------------------------ */

static void test_event_suppression(void)
{
	struct kg_ring front;
	struct ring_backend back;
	uint32_t pages = front_init(&front, 5, UINT32_MAX - 10);
	CU_ASSERT_EQUAL_FATAL(back_map(&back, pages), 0);
	unsigned kicks = 0, notifications = 0;

	/* A fresh ring asks for a kick at the first request. */
	push_request(&front, 1);
	kicks += kg_ring_publish(&front);
	CU_ASSERT_EQUAL(kicks, 1);
	/* The backend is busy (never went to sleep): no further kicks. */
	for (int i = 0; i < 10; i++) {
		push_request(&front, 2);
		push_request(&front, 3);
		kicks += kg_ring_publish(&front);
	}
	CU_ASSERT_EQUAL(kicks, 1);
	CU_ASSERT_EQUAL(serve_all(&back), 21);
	/* Backend goes to sleep with nothing pending: next publish kicks,
	 * once for a whole batch. */
	CU_ASSERT_FALSE(ring_backend_prepare_sleep(&back));
	push_request(&front, 4);
	push_request(&front, 5);
	kicks += kg_ring_publish(&front);
	CU_ASSERT_EQUAL(kicks, 2);
	/* Published between the backend's last look and its req_event store:
	 * prepare_sleep sees it and says "do not sleep". */
	CU_ASSERT_EQUAL(serve_all(&back), 2);
	push_request(&front, 6);
	kicks += kg_ring_publish(&front); /* req_event is stale: no kick */
	CU_ASSERT_EQUAL(kicks, 2);
	CU_ASSERT_TRUE(ring_backend_prepare_sleep(&back));
	CU_ASSERT_EQUAL(serve_all(&back), 1);

	/* Responses: the frontend asked at setup for the first response. */
	notifications += ring_backend_publish(&back);
	CU_ASSERT_EQUAL(notifications, 1);
	/* Frontend not sleeping: more responses notify nobody. */
	for (int i = 0; i < 3; i++) {
		push_request(&front, 7);
		kg_ring_publish(&front);
		serve_all(&back);
		notifications += ring_backend_publish(&back);
	}
	CU_ASSERT_EQUAL(notifications, 1);
	/* Frontend consumes all, then sleeps: the next batch notifies once. */
	while (kg_ring_peek_response(&front))
		kg_ring_consume_response(&front);
	CU_ASSERT_FALSE(kg_ring_prepare_sleep(&front));
	for (int i = 0; i < 3; i++)
		push_request(&front, 8);
	kg_ring_publish(&front);
	serve_all(&back);
	notifications += ring_backend_publish(&back);
	CU_ASSERT_EQUAL(notifications, 2);
	/* A response published before the frontend's recheck is found by it. */
	push_request(&front, 9);
	kg_ring_publish(&front);
	while (kg_ring_peek_response(&front))
		kg_ring_consume_response(&front);
	serve_all(&back);
	ring_backend_publish(&back);
	CU_ASSERT_TRUE(kg_ring_prepare_sleep(&front));
}

/* Take one pending request and answer it (the backend answering one
 * completion at a time); returns whether the publish asked to notify. */
static bool answer_one(struct ring_backend *back)
{
	CU_ASSERT_FATAL(ring_backend_pending(back) > 0);
	struct kapsel_blk_request req;
	ring_backend_take_request(back, &req);
	struct kapsel_blk_response rsp = { .id = req.id };
	ring_backend_put_response(back, &rsp);
	return ring_backend_publish(back);
}

/* A frontend with many requests outstanding asks to be woken at the n-th
 * response: completions published one by one notify it once, at the n-th,
 * across the 32-bit wrap too. */
static void test_batched_notification(void)
{
	static const uint32_t starts[] = { 0, UINT32_MAX - 3 };
	for (size_t s = 0; s < sizeof(starts) / sizeof(starts[0]); s++) {
		struct kg_ring front;
		struct ring_backend back;
		uint32_t pages = front_init(&front, 5, starts[s]);
		CU_ASSERT_EQUAL_FATAL(back_map(&back, pages), 0);
		for (uint64_t i = 0; i < 32; i++)
			push_request(&front, i);
		kg_ring_publish(&front);
		/* Two answered before the frontend sleeps; it wants 24. */
		answer_one(&back);
		answer_one(&back);
		CU_ASSERT_EQUAL(kg_ring_responses_ready(&front), 2);
		CU_ASSERT_FALSE(kg_ring_prepare_sleep_for(&front, 24));
		unsigned notified_at = 0, notifications = 0;
		for (unsigned n = 3; n <= 32; n++) {
			if (answer_one(&back)) {
				notifications++;
				if (!notified_at)
					notified_at = n;
			}
		}
		CU_ASSERT_EQUAL(notifications, 1);
		CU_ASSERT_EQUAL(notified_at, 24);
		CU_ASSERT_EQUAL(kg_ring_responses_ready(&front), 32);
		/* Already there: do not sleep. */
		CU_ASSERT_TRUE(kg_ring_prepare_sleep_for(&front, 32));
		/* A batch published in one go across the event notifies once. */
		for (unsigned i = 0; i < 32; i++)
			kg_ring_consume_response(&front);
		for (uint64_t i = 0; i < 8; i++)
			push_request(&front, i);
		kg_ring_publish(&front);
		CU_ASSERT_FALSE(kg_ring_prepare_sleep_for(&front, 6));
		CU_ASSERT_EQUAL(serve_all(&back), 8);
		CU_ASSERT_TRUE(ring_backend_publish(&back));
		CU_ASSERT_FALSE(back.broken);
	}
}

static void test_need_notify_arithmetic(void)
{
	/* event in (old, new] notifies, across the 32-bit wrap too. */
	CU_ASSERT_TRUE(kapsel_ring_need_notify(5, 4, 5));
	CU_ASSERT_TRUE(kapsel_ring_need_notify(5, 0, 9));
	CU_ASSERT_FALSE(kapsel_ring_need_notify(5, 5, 9));
	CU_ASSERT_FALSE(kapsel_ring_need_notify(10, 5, 9));
	CU_ASSERT_FALSE(kapsel_ring_need_notify(5, 5, 5));
	CU_ASSERT_TRUE(kapsel_ring_need_notify(0, UINT32_MAX - 1, 2));
	CU_ASSERT_TRUE(kapsel_ring_need_notify(UINT32_MAX, UINT32_MAX - 1, 2));
	CU_ASSERT_FALSE(kapsel_ring_need_notify(3, UINT32_MAX - 1, 2));
	CU_ASSERT_FALSE(kapsel_ring_need_notify(UINT32_MAX - 1, UINT32_MAX - 1, 2));
}

/* ---- hostile producer ------------------------------------------------------------ */

static void test_hostile_producer(void)
{
	struct kg_ring front;
	struct ring_backend back;
	uint32_t start = UINT32_MAX - 2;
	uint32_t pages = front_init(&front, 3, start);
	CU_ASSERT_EQUAL_FATAL(back_map(&back, pages), 0);

	/* Exactly a ring's worth is legal. */
	front.header->req_prod = start + 8;
	CU_ASSERT_EQUAL(ring_backend_pending(&back), 8);
	struct kapsel_blk_request req;
	for (int i = 0; i < 3; i++)
		ring_backend_take_request(&back, &req);
	/* 3 taken, unanswered: 6 more would make 9 outstanding. */
	front.header->req_prod = start + 3 + 6;
	CU_ASSERT_EQUAL(ring_backend_pending(&back), -1);
	CU_ASSERT_TRUE(back.broken);
	CU_ASSERT_EQUAL(back.bad_req_prod, start + 9);
	/* Broken stays broken, even if the guest repents. */
	front.header->req_prod = start + 4;
	CU_ASSERT_EQUAL(ring_backend_pending(&back), -1);
	CU_ASSERT_FALSE(ring_backend_prepare_sleep(&back));
	CU_ASSERT_FALSE(ring_backend_has_new(&back));

	/* Jumps far ahead and moves backwards are refused too. */
	uint32_t bad[] = { start + 3 + 9, start + 0x7fffffffu, start + 0x80000000u, start - 1,
			   start + 2 };
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		pages = front_init(&front, 3, start);
		CU_ASSERT_EQUAL_FATAL(back_map(&back, pages), 0);
		for (int k = 0; k < 3; k++)
			push_request(&front, (uint64_t)k);
		kg_ring_publish(&front);
		CU_ASSERT_EQUAL(serve_all(&back), 3);
		front.header->req_prod = bad[i];
		CU_ASSERT_EQUAL(ring_backend_pending(&back), -1);
		CU_ASSERT_EQUAL(back.req_cons, start + 3); /* nothing more taken */
	}
}

/* Responses written but not published still occupy the ring: a guest
 * that publishes past them (it cannot have seen them) breaks the ring, so
 * one serving pass never takes more than a ring's worth of requests. */
static void test_unpublished_responses_outstanding(void)
{
	struct kg_ring front;
	struct ring_backend back;
	uint32_t start = UINT32_MAX - 4;
	uint32_t pages = front_init(&front, 3, start);
	CU_ASSERT_EQUAL_FATAL(back_map(&back, pages), 0);

	/* Legal: 8 answered and published, then 8 more. */
	for (uint64_t i = 0; i < 8; i++)
		push_request(&front, i);
	kg_ring_publish(&front);
	CU_ASSERT_EQUAL(serve_all(&back), 8);
	ring_backend_publish(&back);
	front.header->req_prod = start + 16;
	CU_ASSERT_EQUAL(ring_backend_pending(&back), 8);
	CU_ASSERT_FALSE(back.broken);

	/* Hostile: the guest keeps publishing while the backend answers
	 * without publishing in between (one serving pass). */
	pages = front_init(&front, 3, start);
	CU_ASSERT_EQUAL_FATAL(back_map(&back, pages), 0);
	uint32_t taken = 0;
	for (int pass = 0; pass < 100; pass++) {
		front.header->req_prod = back.req_cons + 8;
		int pending = ring_backend_pending(&back);
		if (pending < 0)
			break;
		for (int i = 0; i < pending; i++) {
			struct kapsel_blk_request req;
			ring_backend_take_request(&back, &req);
			struct kapsel_blk_response rsp = { .id = req.id };
			ring_backend_put_response(&back, &rsp);
			taken++;
		}
	}
	CU_ASSERT_EQUAL(taken, 8);
	CU_ASSERT_TRUE(back.broken);
	CU_ASSERT_EQUAL(back.bad_req_prod, start + 16);
	/* Nothing was published past what the guest may have seen. */
	CU_ASSERT_EQUAL(front.header->rsp_prod, start);
}

static void test_map_restored(void)
{
	/* A ring saved quiesced at index 10 with 3 requests queued after. */
	struct kg_ring front;
	struct ring_backend back;
	uint32_t pages = front_init(&front, 3, 7);
	CU_ASSERT_EQUAL_FATAL(back_map(&back, pages), 0);
	for (uint64_t i = 0; i < 3; i++)
		push_request(&front, i);
	kg_ring_publish(&front);
	CU_ASSERT_EQUAL(serve_all(&back), 3);
	ring_backend_publish(&back);
	for (uint64_t i = 3; i < 6; i++)
		push_request(&front, i);
	kg_ring_publish(&front);
	/* A fresh setup refuses pending requests; a restore accepts them. */
	CU_ASSERT_EQUAL(back_map(&back, pages), -KAPSEL_EINVAL);
	CU_ASSERT_EQUAL(ring_backend_map_restored(&back, &mem, RING_GPA, pages, REQ_BYTES,
						  RSP_BYTES, 9),
			-KAPSEL_EINVAL);
	CU_ASSERT_EQUAL_FATAL(ring_backend_map_restored(&back, &mem, RING_GPA, pages, REQ_BYTES,
							RSP_BYTES, 10),
			      0);
	CU_ASSERT_EQUAL(ring_backend_pending(&back), 3);
	struct kapsel_blk_request req;
	ring_backend_take_request(&back, &req);
	CU_ASSERT_EQUAL(req.id, 3);
}

/* ---- two threads -------------------------------------------------------------------- */

#define THREAD_REQUESTS 200000u

struct threaded {
	struct kg_ring front;
	struct ring_backend back;
	sem_t kick, notify;
	unsigned kicks, notifications;
	int backend_failed;
	volatile int done;
};

static int sem_wait_seconds(sem_t *sem, int seconds)
{
	struct timespec deadline;
	clock_gettime(CLOCK_REALTIME, &deadline);
	deadline.tv_sec += seconds;
	while (sem_timedwait(sem, &deadline) < 0)
		if (errno != EINTR)
			return -1;
	return 0;
}

static void *backend_thread(void *opaque)
{
	struct threaded *t = opaque;
	while (!t->done) {
		int pending = ring_backend_pending(&t->back);
		if (pending < 0) {
			t->backend_failed = 1;
			return NULL;
		}
		for (int i = 0; i < pending; i++) {
			struct kapsel_blk_request req;
			ring_backend_take_request(&t->back, &req);
			struct kapsel_blk_response rsp = { .id = req.id,
							   .submit_tsc = req.sector * 3 + 1 };
			ring_backend_put_response(&t->back, &rsp);
		}
		if (ring_backend_publish(&t->back)) {
			t->notifications++;
			sem_post(&t->notify);
		}
		if (pending == 0 && !ring_backend_prepare_sleep(&t->back))
			if (sem_wait_seconds(&t->kick, 10) < 0 && !t->done) {
				t->backend_failed = 2; /* a lost kick */
				return NULL;
			}
	}
	return NULL;
}

static void test_two_threads(void)
{
	struct threaded *t = calloc(1, sizeof(*t));
	uint32_t pages = front_init(&t->front, 6, UINT32_MAX - 1000);
	CU_ASSERT_EQUAL_FATAL(back_map(&t->back, pages), 0);
	sem_init(&t->kick, 0, 0);
	sem_init(&t->notify, 0, 0);
	pthread_t thread;
	pthread_create(&thread, NULL, backend_thread, t);

	uint64_t sent = 0, received = 0;
	bool ok = true;
	while (received < THREAD_REQUESTS && ok) {
		/* Fill what is free, publish, kick if asked. */
		unsigned batch = 1 + (unsigned)(sent % 13);
		for (unsigned i = 0; i < batch && sent < THREAD_REQUESTS; i++) {
			struct kapsel_blk_request *r = kg_ring_next_request(&t->front);
			if (!r)
				break;
			r->id = sent;
			r->sector = sent ^ 0x5555;
			kg_ring_push_request(&t->front);
			sent++;
		}
		if (kg_ring_publish(&t->front)) {
			t->kicks++;
			sem_post(&t->kick);
		}
		const struct kapsel_blk_response *rsp;
		unsigned got = 0;
		while ((rsp = kg_ring_peek_response(&t->front))) {
			if (rsp->id != received || rsp->submit_tsc != (received ^ 0x5555) * 3 + 1)
				ok = false;
			kg_ring_consume_response(&t->front);
			received++;
			got++;
		}
		/* Ring full (or all sent) and nothing back: sleep for a notify. */
		if (!got &&
		    (sent == THREAD_REQUESTS || kg_ring_outstanding(&t->front) == t->front.size) &&
		    !kg_ring_prepare_sleep(&t->front)) {
			if (sem_wait_seconds(&t->notify, 10) < 0) {
				ok = false; /* a lost notification */
				break;
			}
		}
	}
	t->done = 1;
	sem_post(&t->kick);
	pthread_join(thread, NULL);
	CU_ASSERT_TRUE(ok);
	CU_ASSERT_EQUAL(received, THREAD_REQUESTS);
	CU_ASSERT_EQUAL(t->backend_failed, 0);
	CU_ASSERT_FALSE(t->back.broken);
	/* Suppression never sends more signals than messages. */
	CU_ASSERT_TRUE(t->kicks <= THREAD_REQUESTS);
	CU_ASSERT_TRUE(t->notifications <= THREAD_REQUESTS);
	if (getenv("KAPSEL_TEST_VERBOSE"))
		printf("\n  %u requests: %u kicks, %u notifications\n", THREAD_REQUESTS, t->kicks,
		       t->notifications);
	sem_destroy(&t->kick);
	sem_destroy(&t->notify);
	free(t);
}

int main(void)
{
	static const struct unit_test tests[] = {
		{ "map validation", test_map_validation },
		{ "ordering", test_ordering },
		{ "32-bit index wrap-around", test_wraparound },
		{ "full and empty ring", test_full_and_empty },
		{ "event index suppression", test_event_suppression },
		{ "batched notification (wake at the n-th response)", test_batched_notification },
		{ "need_notify arithmetic", test_need_notify_arithmetic },
		{ "hostile producer index", test_hostile_producer },
		{ "unpublished responses are outstanding", test_unpublished_responses_outstanding },
		{ "map a restored ring", test_map_restored },
		{ "frontend and backend threads", test_two_threads },
	};
	int status = UNIT_RUN("ring", tests);
	free(ram);
	return status;
}
