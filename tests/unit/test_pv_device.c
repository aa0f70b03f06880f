/* Unit tests of the PV device skeleton (pv_device.c, pv_queue.c) without KVM: setup handshake, doorbell, serving thread start/stop, quiesce/resume, in-exit serving, ring records. */
#define _GNU_SOURCE
#include <errno.h>
#include <poll.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <time.h>
#include <unistd.h>

#include "core/vm.h"
#include "cunit_main.h"
#include "devices/pv_device.h"
#include "kapsel/rng.h"
#include "kapsel_guest/ring.h"

/*
 * A fake VM: guest RAM in a heap buffer, an event page, no /dev/kvm.  The
 * test device speaks the entropy ring's slot layout (any fixed-size
 * protocol would do) and answers each request with its length; a test
 * can make it report work in flight (held) to see quiesce and ring
 * changes wait for it.  The test thread plays the guest with the guest
 * library's ring frontend and kicks the doorbell eventfd itself.
 */

#define RAM_BYTES (256u * 1024u)
#define FLOOR_GPA 0x4000u
#define RING_GPA 0x10000u
#define ORDER 3u
#define WAIT_MS 2000

static uint8_t *ram;
static struct kapsel_event_page events;
static struct kapsel_vm vm;
static struct kg_ring frontend;

struct test_dev {
	struct pv_device pv;
	struct pv_queue queue;
	struct pv_queue beyond; /* a valid queue past queue_count: must stay unused */
	unsigned held;		/* atomic: requests the test says are in flight */
	unsigned served;	/* atomic: requests answered */
	unsigned replaced;	/* ring_replaced calls */
};
static struct test_dev tdev;

static bool test_serve(struct pv_device *pv)
{
	struct test_dev *t = pv_device_priv(pv);
	if (pv->quiescing || pv->switching)
		return false;
	bool progress = false;
	int pending;
	while ((pending = pv_device_pending(pv, 0)) > 0) {
		for (int i = 0; i < pending; i++) {
			struct kapsel_rng_request req;
			pv_queue_take(&t->queue, &req);
			struct kapsel_rng_response rsp = { .id = req.id,
							   .length_bytes = req.length_bytes };
			pv_queue_respond(&t->queue, &rsp);
			__atomic_fetch_add(&t->served, 1, __ATOMIC_RELAXED);
			progress = true;
		}
		pv_device_publish_queue(pv, 0);
	}
	return progress;
}

static unsigned test_in_flight(struct pv_device *pv)
{
	struct test_dev *t = pv_device_priv(pv);
	return __atomic_load_n(&t->held, __ATOMIC_ACQUIRE);
}

static void test_ring_replaced(struct pv_device *pv, unsigned queue)
{
	struct test_dev *t = pv_device_priv(pv);
	(void)queue;
	t->replaced++;
}

static const struct pv_device_class thread_class = {
	.serving = PV_SERVE_ON_THREAD,
	.queue_count = 1,
	.thread_name = "test-pv",
	.serve = test_serve,
	.in_flight = test_in_flight,
	.ring_replaced = test_ring_replaced,
};

static const struct pv_device_class exit_class = {
	.serving = PV_SERVE_IN_EXIT,
	.queue_count = 1,
	.serve = test_serve,
};

static const struct kapsel_device_ops test_ops = {
	.name = "test-pv",
	.type = KAPSEL_DEV_RNG_PV,
	.io_read = pv_device_doorbell_read,
	.io_write = pv_device_doorbell_write,
	.setup = pv_device_setup,
	.reset = pv_device_reset,
	.quiesce = pv_device_quiesce,
	.resume = pv_device_resume,
};

static void fresh_vm(void)
{
	if (!ram)
		ram = calloc(1, RAM_BYTES);
	memset(ram, 0, RAM_BYTES);
	memset(&vm, 0, sizeof(vm));
	memset(&events, 0, sizeof(events));
	vm.mem = (struct guest_memory){
		.memfd = -1, .host_base = ram, .size_bytes = RAM_BYTES, .guest_floor_gpa = FLOOR_GPA
	};
	vm.events = &events;
	vm.vcpu_count = 1;
	vm.vcpus[0] = (struct kapsel_vcpu){ .vm = &vm, .fd = -1, .wake_fd = -1 };
	log_limit_init(&vm.guest_log, 0, 0);
}

/* A device of class cls attached to the fake VM; the thread class gets
 * a doorbell eventfd of ours and its thread started. */
static void fresh_device(const struct pv_device_class *cls)
{
	fresh_vm();
	memset(&tdev, 0, sizeof(tdev));
	pv_queue_init(&tdev.queue, sizeof(struct kapsel_rng_request),
		      sizeof(struct kapsel_rng_response));
	tdev.beyond = tdev.queue;
	pv_device_init(&tdev.pv, cls, &test_ops, &tdev, &tdev.queue, 0);
	tdev.pv.dev.vm = &vm;
	if (cls->serving == PV_SERVE_ON_THREAD) {
		tdev.pv.dev.doorbell_fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
		CU_ASSERT_FATAL(tdev.pv.dev.doorbell_fd >= 0);
		CU_ASSERT_EQUAL_FATAL(pv_device_start(&tdev.pv, "test device"), 0);
		CU_ASSERT_TRUE(tdev.pv.thread_started);
	}
}

static void destroy_device(void)
{
	pv_device_destroy(&tdev.pv);
	CU_ASSERT_FALSE(tdev.pv.thread_started);
	CU_ASSERT_EQUAL(tdev.pv.control_fd, -1);
	if (tdev.pv.dev.doorbell_fd >= 0)
		close(tdev.pv.dev.doorbell_fd);
}

static struct kapsel_device_setup ring_setup(void)
{
	kg_ring_init(&frontend, ram + RING_GPA, ORDER, sizeof(struct kapsel_rng_request),
		     sizeof(struct kapsel_rng_response), 0);
	return (struct kapsel_device_setup){
		.magic = KAPSEL_DEVICE_SETUP_MAGIC,
		.revision = 1,
		.ring_gpa = RING_GPA,
		.ring_pages = kg_ring_pages(ORDER, sizeof(struct kapsel_rng_request),
					    sizeof(struct kapsel_rng_response)),
	};
}

static void push(uint64_t id, uint32_t length)
{
	struct kapsel_rng_request *slot = kg_ring_next_request(&frontend);
	CU_ASSERT_PTR_NOT_NULL_FATAL(slot);
	*slot = (struct kapsel_rng_request){ .id = id, .gpa = 0x20000, .length_bytes = length };
	kg_ring_push_request(&frontend);
	kg_ring_publish(&frontend);
}

static void kick(void)
{
	if (tdev.pv.cls->serving == PV_SERVE_IN_EXIT) {
		tdev.pv.dev.ops->io_write(&tdev.pv.dev, 0, 2, 0);
		return;
	}
	uint64_t one = 1;
	CU_ASSERT_EQUAL(write(tdev.pv.dev.doorbell_fd, &one, sizeof(one)), (ssize_t)sizeof(one));
}

static void sleep_ms(unsigned ms)
{
	struct timespec ts = { ms / 1000, (long)(ms % 1000) * 1000000L };
	nanosleep(&ts, NULL);
}

/* The next response, waiting up to ms for it; NULL if none came. */
static const struct kapsel_rng_response *response_within(unsigned ms)
{
	for (unsigned waited = 0;; waited++) {
		const struct kapsel_rng_response *rsp = kg_ring_peek_response(&frontend);
		if (rsp || waited >= ms)
			return rsp;
		sleep_ms(1);
	}
}

static void expect_response(uint64_t id, uint32_t length)
{
	const struct kapsel_rng_response *rsp = response_within(WAIT_MS);
	CU_ASSERT_PTR_NOT_NULL_FATAL(rsp);
	CU_ASSERT_EQUAL(rsp->id, id);
	CU_ASSERT_EQUAL(rsp->length_bytes, length);
	kg_ring_consume_response(&frontend);
}

/* ---- The handshake ----------------------------------------------------------- */

static void test_setup_handshake(void)
{
	fresh_device(&thread_class);
	struct kapsel_device_setup setup = ring_setup();
	struct kapsel_device_setup bad = setup;
	bad.queue = 1; /* the class has one queue */
	CU_ASSERT_EQUAL(pv_device_setup(&tdev.pv.dev, &bad), -KAPSEL_EINVAL);
	bad = setup;
	bad.ring_gpa = RAM_BYTES - 4096; /* runs past guest RAM */
	CU_ASSERT_EQUAL(pv_device_setup(&tdev.pv.dev, &bad), -KAPSEL_EFAULT);
	bad = setup;
	bad.ring_gpa = RING_GPA + 4096; /* no ring header there */
	CU_ASSERT_EQUAL(pv_device_setup(&tdev.pv.dev, &bad), -KAPSEL_EINVAL);
	bad = setup;
	bad.ring_pages = 1; /* too small for its slots */
	CU_ASSERT_EQUAL(pv_device_setup(&tdev.pv.dev, &bad), -KAPSEL_EINVAL);
	CU_ASSERT_EQUAL(pv_device_ring_slots(&tdev.pv, 0), 0);
	CU_ASSERT_FALSE(pv_device_ever_set_up(&tdev.pv, 0));
	/* A kick before any ring is set up finds nothing to serve. */
	kick();
	sleep_ms(20);
	CU_ASSERT_EQUAL(__atomic_load_n(&tdev.served, __ATOMIC_RELAXED), 0);

	/* A good block: served once setup returns (the handshake waited). */
	CU_ASSERT_EQUAL(pv_device_setup(&tdev.pv.dev, &setup), 0);
	CU_ASSERT_EQUAL(pv_device_ring_slots(&tdev.pv, 0), 1u << ORDER);
	CU_ASSERT_TRUE(pv_device_ever_set_up(&tdev.pv, 0));
	push(2, 16);
	kick();
	expect_response(2, 16);
	CU_ASSERT_TRUE(__atomic_load_n(&tdev.pv.kicks, __ATOMIC_RELAXED) >= 1);
	destroy_device();
}

/* ---- Doorbell and event channel ------------------------------------------------- */

static void test_doorbell_and_notify(void)
{
	fresh_device(&thread_class);
	struct kapsel_device_setup setup = ring_setup();
	CU_ASSERT_EQUAL_FATAL(pv_device_setup(&tdev.pv.dev, &setup), 0);
	/* The guest binds channel 5 and masks it (so the notify stops at the
	 * pending bit: there is no vCPU to wake here). */
	events.mask[0] = 1u << 5;
	__atomic_store_n(&tdev.pv.dev.evtchn_port, 5, __ATOMIC_RELEASE);
	/* The frontend asks to be told about the next response. */
	for (uint64_t i = 0; i < 20; i++) {
		push(100 + i, (uint32_t)i + 1);
		kick();
		expect_response(100 + i, (uint32_t)i + 1);
	}
	CU_ASSERT_EQUAL(__atomic_load_n(&tdev.served, __ATOMIC_RELAXED), 20);
	uint64_t kicks = __atomic_load_n(&tdev.pv.kicks, __ATOMIC_RELAXED);
	CU_ASSERT_TRUE(kicks >= 1 && kicks <= 20);
	CU_ASSERT_TRUE(__atomic_load_n(&events.pending[0], __ATOMIC_RELAXED) & (1u << 5));
	CU_ASSERT_TRUE(__atomic_load_n(&tdev.pv.notifications, __ATOMIC_RELAXED) >= 1);
	destroy_device();
}

/* ---- Quiesce, resume, ring changes wait for work in flight ---------------------- */

static bool quiesce_returned;

static void *quiesce_thread(void *opaque)
{
	(void)opaque;
	pv_device_quiesce(&tdev.pv.dev);
	__atomic_store_n(&quiesce_returned, true, __ATOMIC_RELEASE);
	return NULL;
}

static bool held_ended;

/* End the held work after 100 ms and wake the serving thread. */
static void *end_held_soon(void *opaque)
{
	(void)opaque;
	sleep_ms(100);
	__atomic_store_n(&held_ended, true, __ATOMIC_RELEASE);
	__atomic_store_n(&tdev.held, 0, __ATOMIC_RELEASE);
	uint64_t one = 1;
	ssize_t n = write(tdev.pv.dev.doorbell_fd, &one, sizeof(one));
	(void)n;
	return NULL;
}

static void test_quiesce_resume(void)
{
	fresh_device(&thread_class);
	struct kapsel_device_setup setup = ring_setup();
	CU_ASSERT_EQUAL_FATAL(pv_device_setup(&tdev.pv.dev, &setup), 0);
	push(1, 4);
	kick();
	expect_response(1, 4);

	/* Work in flight: quiesce waits until it ends. */
	__atomic_store_n(&tdev.held, 1, __ATOMIC_RELEASE);
	quiesce_returned = false;
	pthread_t thread;
	CU_ASSERT_EQUAL_FATAL(pthread_create(&thread, NULL, quiesce_thread, NULL), 0);
	sleep_ms(100);
	CU_ASSERT_FALSE(__atomic_load_n(&quiesce_returned, __ATOMIC_ACQUIRE));
	CU_ASSERT_FALSE(pv_device_is_quiesced(&tdev.pv));
	__atomic_store_n(&tdev.held, 0, __ATOMIC_RELEASE);
	kick(); /* the test device has no completion to wake its thread */
	pthread_join(thread, NULL);
	CU_ASSERT_TRUE(quiesce_returned);
	CU_ASSERT_TRUE(pv_device_is_quiesced(&tdev.pv));

	/* Quiesced: requests stay in the ring, nothing changes. */
	push(2, 5);
	kick();
	CU_ASSERT_PTR_NULL(response_within(100));
	struct pv_queue_state state;
	pv_queue_save(&tdev.queue, &state);
	CU_ASSERT_EQUAL(state.ring_gpa, RING_GPA);
	CU_ASSERT_EQUAL(state.order, ORDER);
	CU_ASSERT_EQUAL(state.req_cons, 1);
	CU_ASSERT_EQUAL(state.rsp_prod, 1);

	/* Resume: the waiting request is served. */
	pv_device_resume(&tdev.pv.dev);
	CU_ASSERT_FALSE(pv_device_is_quiesced(&tdev.pv));
	expect_response(2, 5);

	/* A reset (reboot) waits for work in flight, then drops the ring. */
	__atomic_store_n(&tdev.held, 1, __ATOMIC_RELEASE);
	unsigned replaced = tdev.replaced;
	/* Nothing ends the held work by itself: another thread does, later. */
	held_ended = false;
	pthread_t ender;
	CU_ASSERT_EQUAL_FATAL(pthread_create(&ender, NULL, end_held_soon, NULL), 0);
	pv_device_reset(&tdev.pv.dev);
	CU_ASSERT_TRUE(__atomic_load_n(&held_ended, __ATOMIC_ACQUIRE)); /* reset waited */
	pthread_join(ender, NULL);
	CU_ASSERT_EQUAL(tdev.replaced, replaced + 1);
	CU_ASSERT_EQUAL(pv_device_ring_slots(&tdev.pv, 0), 0);
	push(3, 6);
	kick();
	CU_ASSERT_PTR_NULL(response_within(100));
	destroy_device();
}

/* ---- In-exit serving ---------------------------------------------------------- */

static void test_in_exit(void)
{
	fresh_device(&exit_class);
	CU_ASSERT_FALSE(tdev.pv.thread_started);
	struct kapsel_device_setup setup = ring_setup();
	setup.queue = 2;
	CU_ASSERT_EQUAL(pv_device_setup(&tdev.pv.dev, &setup), -KAPSEL_EINVAL);
	setup.queue = 0;
	CU_ASSERT_EQUAL(pv_device_setup(&tdev.pv.dev, &setup), 0);
	push(7, 9);
	kick(); /* served before the "exit" returns */
	const struct kapsel_rng_response *rsp = kg_ring_peek_response(&frontend);
	CU_ASSERT_PTR_NOT_NULL_FATAL(rsp);
	CU_ASSERT_EQUAL(rsp->id, 7);
	kg_ring_consume_response(&frontend);
	CU_ASSERT_EQUAL(tdev.pv.kicks, 1);
	uint32_t value = 0;
	tdev.pv.dev.ops->io_read(&tdev.pv.dev, 0, 2, &value);
	CU_ASSERT_EQUAL(value, UINT32_MAX);
	pv_device_quiesce(&tdev.pv.dev); /* nothing to wait for */
	CU_ASSERT_TRUE(pv_device_is_quiesced(&tdev.pv));
	pv_device_reset(&tdev.pv.dev);
	CU_ASSERT_FALSE(tdev.queue.active);
	push(8, 9);
	kick();
	CU_ASSERT_PTR_NULL(kg_ring_peek_response(&frontend));
	pv_device_destroy(&tdev.pv);
}

/* ---- The ring part of a state record ------------------------------------------ */

static void test_queue_restore(void)
{
	fresh_device(&exit_class);
	struct kapsel_device_setup setup = ring_setup();
	CU_ASSERT_EQUAL_FATAL(pv_device_setup(&tdev.pv.dev, &setup), 0);
	push(1, 1);
	kick();
	kg_ring_consume_response(&frontend);
	struct pv_queue_state saved;
	pv_queue_save(&tdev.queue, &saved);
	CU_ASSERT_EQUAL(saved.rsp_prod, 1);

	char error[256];
	struct ring_backend ring;
	struct pv_queue_state bad = saved;
	bad.broken = 2;
	CU_ASSERT_EQUAL(pv_queue_restore(&tdev.queue, &vm.mem, &bad, "test record", &ring, error,
					 sizeof(error)),
			-EINVAL);
	CU_ASSERT_PTR_NOT_NULL(strstr(error, "test record: broken is 2"));
	bad = saved;
	bad.req_cons = saved.rsp_prod + 1;
	CU_ASSERT_EQUAL(pv_queue_restore(&tdev.queue, &vm.mem, &bad, "test record", &ring, error,
					 sizeof(error)),
			-EINVAL);
	CU_ASSERT_PTR_NOT_NULL(strstr(error, "taken 2, answered 1"));
	bad = saved;
	bad.req_cons = bad.rsp_prod = saved.rsp_prod + 3; /* not where memory says */
	CU_ASSERT_EQUAL(pv_queue_restore(&tdev.queue, &vm.mem, &bad, "test record", &ring, error,
					 sizeof(error)),
			-EINVAL);
	CU_ASSERT_PTR_NOT_NULL(strstr(error, "is not a valid ring in the saved memory"));
	bad = saved;
	bad.order = ORDER + 1;
	CU_ASSERT_EQUAL(pv_queue_restore(&tdev.queue, &vm.mem, &bad, "test record", &ring, error,
					 sizeof(error)),
			-EINVAL);
	CU_ASSERT_PTR_NOT_NULL(strstr(error, "order"));

	/* A good record: the device serves on where it was. */
	pv_device_reset(&tdev.pv.dev);
	CU_ASSERT_EQUAL(pv_device_restore_queue(&tdev.pv, 0, &saved, "test record", error,
						sizeof(error)),
			0);
	push(2, 2);
	kick();
	const struct kapsel_rng_response *rsp = kg_ring_peek_response(&frontend);
	CU_ASSERT_PTR_NOT_NULL_FATAL(rsp);
	CU_ASSERT_EQUAL(rsp->id, 2);
	pv_device_destroy(&tdev.pv);
}

int main(void)
{
	static const struct unit_test tests[] = {
		{ "setup handshake: bad and good control blocks", test_setup_handshake },
		{ "doorbell kicks and event channel", test_doorbell_and_notify },
		{ "quiesce, resume and reset wait for work in flight", test_quiesce_resume },
		{ "serving in the exit of the kick", test_in_exit },
		{ "ring state records", test_queue_restore },
	};
	return UNIT_RUN("pv_device", tests);
}
