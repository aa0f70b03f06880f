/* A VM's network interfaces: the --net option syntax and the per-VM MAC addresses. */
#include "config/config.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "config/config_options.h"
#include "core/error_text.h"

#define NET_SYNTAX                                                                 \
	"--net socket=PATH,peer=PATH or --net tap=IFNAME, then [,model=pv|ne2000]" \
	"[,mac=XX:XX:XX:XX:XX:XX][,pps=N][,pps_burst=N][,bps=N][,bps_burst=N]"

static int parse_mac(const char *text, uint8_t mac[6])
{
	unsigned v[6];
	char tail;
	if (!text ||
	    sscanf(text, "%2x:%2x:%2x:%2x:%2x:%2x%c", &v[0], &v[1], &v[2], &v[3], &v[4], &v[5],
		   &tail) != 6 ||
	    strlen(text) != 17)
		return -EINVAL;
	for (int i = 0; i < 6; i++)
		mac[i] = (uint8_t)v[i];
	/* A station address is unicast (bit 0 of the first byte clear). */
	return (mac[0] & 1) ? -EINVAL : 0;
}

void vm_net_config_free(struct vm_net_config *net)
{
	free(net->path);
	free(net->peer);
	net->path = net->peer = NULL;
}

int vm_config_parse_net(const char *text, struct vm_net_config *net, char *error, size_t error_len)
{
	char *copy = strdup(text), *cursor = copy;
	int err = 0;
	bool have_backend = false;

	memset(net, 0, sizeof(*net));
	if (!copy)
		return -ENOMEM;
	char *opt, *value;
	while (!err && (opt = config_next_option(&cursor, &value))) {
		uint64_t number = 0;
		if ((strcmp(opt, "socket") == 0 || strcmp(opt, "tap") == 0) && value && *value) {
			if (have_backend) {
				err = kapsel_fail(error, error_len, -EINVAL,
						  "--net '%s': give one of socket= and tap=", text);
				break;
			}
			have_backend = true;
			net->backend = strcmp(opt, "tap") == 0 ? VM_NET_BACKEND_TAP
							       : VM_NET_BACKEND_SOCKET;
			net->path = strdup(value);
			if (net->backend == VM_NET_BACKEND_TAP && strlen(value) >= 16)
				err = kapsel_fail(
					error, error_len, -EINVAL,
					"--net '%s': interface name '%s' is longer than 15 characters",
					text, value);
		} else if (strcmp(opt, "peer") == 0 && value && *value) {
			free(net->peer);
			net->peer = strdup(value);
		} else if (strcmp(opt, "model") == 0 && value) {
			if (strcmp(value, "pv") == 0 || strcmp(value, "xen") == 0 ||
			    strcmp(value, "virtio") == 0)
				net->model = VM_NET_MODEL_PV;
			else if (strcmp(value, "ne2000") == 0 || strcmp(value, "ne2k_isa") == 0)
				net->model = VM_NET_MODEL_NE2000;
			else
				err = kapsel_fail(
					error, error_len, -EINVAL,
					"--net '%s': model '%s' is unknown; use model=pv or model=ne2000",
					text, value);
		} else if (strcmp(opt, "mac") == 0) {
			if (parse_mac(value, net->mac) < 0)
				err = kapsel_fail(
					error, error_len, -EINVAL,
					"--net '%s': mac '%s' is not a unicast address XX:XX:XX:XX:XX:XX (first byte even)",
					text, value ? value : "");
			net->has_mac = true;
		} else if (config_parse_u64(value, &number) == 0 &&
			   (strcmp(opt, "pps") == 0 || strcmp(opt, "pps_burst") == 0 ||
			    strcmp(opt, "bps") == 0 || strcmp(opt, "bps_burst") == 0)) {
			if (strcmp(opt, "pps") == 0)
				net->frames_limit.rate_per_second = number;
			else if (strcmp(opt, "pps_burst") == 0)
				net->frames_limit.burst = number;
			else if (strcmp(opt, "bps") == 0)
				net->bytes_limit.rate_per_second = number;
			else
				net->bytes_limit.burst = number;
		} else {
			err = config_unknown_option(error, error_len, "--net", text, opt, value,
						    "syntax: " NET_SYNTAX);
		}
	}
	free(copy);
	if (!err && !have_backend)
		err = kapsel_fail(error, error_len, -EINVAL,
				  "--net '%s' names no backend; syntax: " NET_SYNTAX, text);
	else if (!err && net->backend == VM_NET_BACKEND_SOCKET && !net->peer)
		err = kapsel_fail(
			error, error_len, -EINVAL,
			"--net '%s': a socket backend needs peer=PATH (the other VM's socket=PATH)",
			text);
	else if (!err && net->backend == VM_NET_BACKEND_TAP && net->peer)
		err = kapsel_fail(error, error_len, -EINVAL,
				  "--net '%s': peer= is for socket backends only", text);
	else if (!err && !net->path)
		err = -ENOMEM;
	if (err)
		vm_net_config_free(net);
	return err;
}

void vm_config_net_mac(const struct vm_config *config, unsigned index, uint8_t mac[6])
{
	const struct vm_net_config *net = index < config->net_count ? &config->nets[index] : NULL;
	if (net && net->has_mac) {
		memcpy(mac, net->mac, 6);
		return;
	}
	/* FNV-1a over the identity (uuid, else name) and the index. */
	uint64_t hash = 14695981039346656037ull;
	const uint8_t *bytes = config->has_uuid ? config->uuid : (const uint8_t *)config->name;
	size_t length = config->has_uuid ? 16 : strnlen(config->name, sizeof(config->name));
	for (size_t i = 0; i < length; i++)
		hash = (hash ^ bytes[i]) * 1099511628211ull;
	hash = (hash ^ index) * 1099511628211ull;
	/* 0x02: locally administered, unicast.  Five bytes from the hash. */
	mac[0] = 0x02;
	for (int i = 1; i < 6; i++)
		mac[i] = (uint8_t)(hash >> (8 * (i - 1) + 16));
}
