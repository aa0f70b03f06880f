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
	char text[32];
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
			snprintf(text, sizeof(text), "tap=x,mac=%s", value ? value : "");
			struct vm_net_config probe;
			if (vm_config_parse_net(text, &probe, error, error_len) < 0) {
				err = config_xml_fail(
					error, error_len, xml_path,
					"/domain/devices/interface/mac address='%s' is not a unicast XX:XX:XX:XX:XX:XX",
					value ? value : "");
			} else {
				memcpy(net.mac, probe.mac, 6);
				net.has_mac = true;
				vm_net_config_free(&probe);
			}
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
	for (unsigned i = 0; !err && i < config->net_count; i++)
		if (net.model == VM_NET_MODEL_NE2000 &&
		    config->nets[i].model == VM_NET_MODEL_NE2000)
			err = config_xml_fail(
				error, error_len, xml_path,
				"/domain/devices/interface/model: two interfaces with type='ne2k_isa'; Kapsel emulates one NE2000, attach the others with type='xen'");
	if (err) {
		vm_net_config_free(&net);
		return err;
	}
	config->nets[config->net_count++] = net;
	return 0;
}

#define W(call)                      \
	do {                         \
		if ((call) < 0)      \
			return -EIO; \
	} while (0)

int config_xml_write_interface(xmlTextWriterPtr w, const struct vm_net_config *net, unsigned index)
{
	if (net->backend != VM_NET_BACKEND_TAP) {
		kapsel_warn("net %u (socket '%s'): libvirt XML has no Unix datagram socket link; it is left out of the domain XML",
			    index, net->path);
		return 0;
	}
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
