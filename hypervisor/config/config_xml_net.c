/* libvirt <interface> elements to a VM's network interfaces and back (config_xml.c calls these). */
#define _GNU_SOURCE
#include "config/config_xml_net.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "config/config_xml_util.h"
#include "core/log.h"

/* A unicast MAC in the --net syntax (one parser of MACs). */
static int parse_mac(const char *value, uint8_t mac[6], const char *where, const char *xml_path,
		     char *error, size_t error_len)
{
	char text[48];
	snprintf(text, sizeof(text), "tap=x,mac=%s", value ? value : "");
	struct vm_net_config probe;
	if (!value || strlen(value) != 17 ||
	    vm_config_parse_net(text, &probe, error, error_len) < 0)
		return config_xml_fail(error, error_len, xml_path,
				       "%s='%s' is not a unicast XX:XX:XX:XX:XX:XX", where,
				       value ? value : "");
	memcpy(mac, probe.mac, 6);
	vm_net_config_free(&probe);
	return 0;
}

/* Kapsel emulates one NE2000. */
static int check_one_ne2000(const struct vm_config *config, const char *xml_path, char *error,
			    size_t error_len)
{
	unsigned count = 0;
	for (unsigned i = 0; i < config->net_count; i++)
		count += config->nets[i].model == VM_NET_MODEL_NE2000;
	if (count > 1)
		return config_xml_fail(
			error, error_len, xml_path,
			"/domain/devices/interface/model: two interfaces with type='ne2k_isa'; Kapsel emulates one NE2000, attach the others with type='xen'");
	return 0;
}

int config_xml_parse_interface(const xmlNode *node, struct vm_config *config, const char *xml_path,
			       char *error, size_t error_len)
{
	char *type = config_xml_attr(node, "type");
	int err = 0;
	if (!type || strcmp(type, "ethernet") != 0)
		err = config_xml_fail(
			error, error_len, xml_path,
			"/domain/devices/interface type='%s' is not supported; use type='ethernet' with <target dev='TAP'/> (a Unix socket link is --net socket=PATH,peer=PATH on the command line)",
			type ? type : "");
	free(type);
	if (err)
		return err;
	if (config->net_count == VM_CONFIG_MAX_NETS)
		return config_xml_fail(error, error_len, xml_path,
				       "/domain/devices/interface: more than %u interfaces",
				       VM_CONFIG_MAX_NETS);
	struct vm_net_config net = { .backend = VM_NET_BACKEND_TAP, .model = VM_NET_MODEL_PV };
	for (const xmlNode *n = node->children; n && !err; n = n->next) {
		if (n->type != XML_ELEMENT_NODE)
			continue;
		char *value = NULL;
		if (config_xml_named(n, "target")) {
			value = config_xml_attr(n, "dev");
			if (!value || !*value || strlen(value) >= 16)
				err = config_xml_fail(
					error, error_len, xml_path,
					"/domain/devices/interface/target dev='%s' must name a tap interface of 1-15 characters",
					value ? value : "");
			else {
				free(net.path);
				net.path = value;
				value = NULL;
			}
		} else if (config_xml_named(n, "model")) {
			value = config_xml_attr(n, "type");
			if (value && (strcmp(value, "xen") == 0 || strcmp(value, "netfront") == 0 ||
				      strcmp(value, "virtio") == 0))
				net.model = VM_NET_MODEL_PV;
			else if (value &&
				 (strcmp(value, "ne2k_isa") == 0 || strcmp(value, "ne2000") == 0))
				net.model = VM_NET_MODEL_NE2000;
			else
				err = config_xml_fail(
					error, error_len, xml_path,
					"/domain/devices/interface/model type='%s' is not supported; use 'xen' (PV network) or 'ne2k_isa' (emulated NE2000)",
					value ? value : "");
		} else if (config_xml_named(n, "mac")) {
			value = config_xml_attr(n, "address");
			err = parse_mac(value, net.mac, "/domain/devices/interface/mac address",
					xml_path, error, error_len);
			net.has_mac = !err;
		} else if (config_xml_named(n, "alias") || config_xml_named(n, "address")) {
			kapsel_warn("domain XML '%s': ignoring /domain/devices/interface/%s (Kapsel numbers interfaces in the order they are listed)",
				    xml_path, n->name);
		} else {
			err = config_xml_fail(error, error_len, xml_path,
					      "/domain/devices/interface/%s is not supported by Kapsel",
					      n->name);
		}
		free(value);
	}
	if (!err && !net.path)
		err = config_xml_fail(
			error, error_len, xml_path,
			"/domain/devices/interface type='ethernet' needs <target dev='TAP'/>");
	if (err) {
		vm_net_config_free(&net);
		return err;
	}
	config->nets[config->net_count++] = net;
	return check_one_ne2000(config, xml_path, error, error_len);
}

#define KAPSEL_INTERFACE "/domain/metadata/kapsel:domain/interface"

static int parse_net_limits(const xmlNode *node, struct vm_net_config *net, const char *xml_path,
			    char *error, size_t error_len)
{
	struct vm_rate_limit frames = net->frames_limit, bytes = net->bytes_limit;
	int err = config_xml_attr_u64(node, "pps", &frames.rate_per_second, KAPSEL_INTERFACE,
				      xml_path, error, error_len);
	if (!err)
		err = config_xml_attr_u64(node, "pps_burst", &frames.burst, KAPSEL_INTERFACE,
					  xml_path, error, error_len);
	if (!err)
		err = config_xml_attr_u64(node, "bps", &bytes.rate_per_second, KAPSEL_INTERFACE,
					  xml_path, error, error_len);
	if (!err)
		err = config_xml_attr_u64(node, "bps_burst", &bytes.burst, KAPSEL_INTERFACE,
					  xml_path, error, error_len);
	if (!err) {
		net->frames_limit = frames;
		net->bytes_limit = bytes;
	}
	return err;
}

/* A socket-linked interface: socket=, peer=, model=, mac=, limits. */
static int parse_socket_interface(const xmlNode *node, struct vm_net_config *net,
				  const char *xml_path, char *error, size_t error_len)
{
	*net = (struct vm_net_config){ .backend = VM_NET_BACKEND_SOCKET };
	net->path = config_xml_attr(node, "socket");
	net->peer = config_xml_attr(node, "peer");
	char *model = config_xml_attr(node, "model"), *mac = config_xml_attr(node, "mac");
	int err = 0;
	if (!net->path || !*net->path || !net->peer || !*net->peer)
		err = config_xml_fail(
			error, error_len, xml_path,
			KAPSEL_INTERFACE
			" socket='%s' needs peer='PATH' too (the other VM's socket), both non-empty",
			net->path ? net->path : "");
	else if (model && strcmp(model, "pv") == 0)
		net->model = VM_NET_MODEL_PV;
	else if (model && strcmp(model, "ne2000") == 0)
		net->model = VM_NET_MODEL_NE2000;
	else if (model)
		err = config_xml_fail(error, error_len, xml_path,
				      KAPSEL_INTERFACE " model='%s' is unknown; use pv or ne2000",
				      model);
	if (!err && mac) {
		err = parse_mac(mac, net->mac, KAPSEL_INTERFACE " mac", xml_path, error, error_len);
		net->has_mac = !err;
	}
	if (!err)
		err = parse_net_limits(node, net, xml_path, error, error_len);
	free(model);
	free(mac);
	if (err)
		vm_net_config_free(net);
	return err;
}

int config_xml_parse_kapsel_interface(const xmlNode *node, bool sockets, struct vm_config *config,
				      const char *xml_path, char *error, size_t error_len)
{
	char *socket = config_xml_attr(node, "socket");
	bool is_socket = socket != NULL;
	free(socket);
	if (is_socket != sockets)
		return 0; /* the other pass */
	uint64_t index = UINT64_MAX;
	char *index_text = config_xml_attr(node, "index");
	int err = 0;
	if (config_xml_attr_u64(node, "index", &index, KAPSEL_INTERFACE, xml_path, error,
				error_len) < 0 ||
	    !index_text)
		err = config_xml_fail(error, error_len, xml_path,
				      KAPSEL_INTERFACE " index='%s' must be a whole number",
				      index_text ? index_text : "");
	free(index_text);
	if (err)
		return err;
	if (!sockets) {
		if (index >= config->net_count)
			return config_xml_fail(error, error_len, xml_path,
					       KAPSEL_INTERFACE
					       " index='%llu' names no interface (there are %u)",
					       (unsigned long long)index, config->net_count);
		return parse_net_limits(node, &config->nets[index], xml_path, error, error_len);
	}
	if (config->net_count == VM_CONFIG_MAX_NETS)
		return config_xml_fail(error, error_len, xml_path,
				       KAPSEL_INTERFACE ": more than %u interfaces",
				       VM_CONFIG_MAX_NETS);
	if (index > config->net_count)
		return config_xml_fail(
			error, error_len, xml_path,
			KAPSEL_INTERFACE
			" index='%llu' leaves a gap: there are %u interfaces before it (list socket interfaces in rising index order)",
			(unsigned long long)index, config->net_count);
	struct vm_net_config net;
	err = parse_socket_interface(node, &net, xml_path, error, error_len);
	if (err)
		return err;
	memmove(&config->nets[index + 1], &config->nets[index],
		(config->net_count - index) * sizeof(config->nets[0]));
	config->nets[index] = net;
	config->net_count++;
	return check_one_ne2000(config, xml_path, error, error_len);
}

#define W(call)                      \
	do {                         \
		if ((call) < 0)      \
			return -EIO; \
	} while (0)

int config_xml_write_interface(xmlTextWriterPtr w, const struct vm_net_config *net, unsigned index)
{
	(void)index;
	if (net->backend != VM_NET_BACKEND_TAP)
		return 0; /* no libvirt form: config_xml_write_kapsel_interface */
	W(xmlTextWriterStartElement(w, BAD_CAST "interface"));
	W(xmlTextWriterWriteAttribute(w, BAD_CAST "type", BAD_CAST "ethernet"));
	if (net->has_mac) {
		const uint8_t *m = net->mac;
		W(xmlTextWriterStartElement(w, BAD_CAST "mac"));
		W(xmlTextWriterWriteFormatAttribute(w, BAD_CAST "address",
						    "%02x:%02x:%02x:%02x:%02x:%02x", m[0], m[1],
						    m[2], m[3], m[4], m[5]));
		W(xmlTextWriterEndElement(w));
	}
	W(xmlTextWriterStartElement(w, BAD_CAST "target"));
	W(xmlTextWriterWriteAttribute(w, BAD_CAST "dev", BAD_CAST net->path));
	W(xmlTextWriterEndElement(w));
	W(xmlTextWriterStartElement(w, BAD_CAST "model"));
	W(xmlTextWriterWriteAttribute(w, BAD_CAST "type",
				      BAD_CAST(net->model == VM_NET_MODEL_NE2000 ? "ne2k_isa"
										 : "netfront")));
	W(xmlTextWriterEndElement(w));
	W(xmlTextWriterEndElement(w));
	return 0;
}

bool config_xml_kapsel_interface_needed(const struct vm_net_config *net)
{
	return net->backend != VM_NET_BACKEND_TAP || net->frames_limit.rate_per_second ||
	       net->frames_limit.burst || net->bytes_limit.rate_per_second ||
	       net->bytes_limit.burst;
}

static int write_u64_attribute(xmlTextWriterPtr w, const char *name, uint64_t value)
{
	return xmlTextWriterWriteFormatAttribute(w, BAD_CAST name, "%llu",
						 (unsigned long long)value);
}

int config_xml_write_kapsel_interface(xmlTextWriterPtr w, const struct vm_net_config *net,
				      unsigned index)
{
	W(xmlTextWriterStartElementNS(w, BAD_CAST "kapsel", BAD_CAST "interface", NULL));
	W(xmlTextWriterWriteFormatAttribute(w, BAD_CAST "index", "%u", index));
	if (net->backend != VM_NET_BACKEND_TAP) {
		W(xmlTextWriterWriteAttribute(w, BAD_CAST "socket", BAD_CAST net->path));
		W(xmlTextWriterWriteAttribute(w, BAD_CAST "peer", BAD_CAST net->peer));
		W(xmlTextWriterWriteAttribute(w, BAD_CAST "model",
					      BAD_CAST(net->model == VM_NET_MODEL_NE2000 ? "ne2000"
											 : "pv")));
		if (net->has_mac) {
			const uint8_t *m = net->mac;
			W(xmlTextWriterWriteFormatAttribute(w, BAD_CAST "mac",
							    "%02x:%02x:%02x:%02x:%02x:%02x", m[0],
							    m[1], m[2], m[3], m[4], m[5]));
		}
	}
	W(write_u64_attribute(w, "pps", net->frames_limit.rate_per_second));
	W(write_u64_attribute(w, "pps_burst", net->frames_limit.burst));
	W(write_u64_attribute(w, "bps", net->bytes_limit.rate_per_second));
	W(write_u64_attribute(w, "bps_burst", net->bytes_limit.burst));
	W(xmlTextWriterEndElement(w));
	return 0;
}
