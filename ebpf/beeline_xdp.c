// SPDX-License-Identifier: Apache-2.0
//
// Beeline's XDP classifier: sits on the node's interface in front of its AF_XDP socket(s).
//
//   storage-port UDP from an allowed source  -> XDP_REDIRECT into the AF_XDP socket of the
//                                               packet's RX queue (XSKMAP, key = queue)
//   storage-port UDP from anywhere else      -> XDP_DROP (counted: not_allowed)
//   storage-port UDP that is malformed       -> XDP_DROP (counted: malformed)
//   storage-port UDP with no socket on queue -> XDP_DROP (counted: no_socket)
//   everything else (ARP, ICMP, TCP, other UDP, IPv6 ND, ...) -> XDP_PASS, untouched
//
// Parses Ethernet with at most one VLAN tag (802.1Q or 802.1ad), IPv4 (with options) and
// IPv6 (UDP directly after the fixed header; a packet with extension headers is not
// recognised as storage traffic and goes to the kernel). Every access is bounds-checked
// against data_end, and there are no loops.
//
// Multi-buffer aware (section "xdp.frags", Linux 5.18+): a packet larger than one page
// arrives as a linear part (which holds every header this program reads) plus fragments,
// and lengths are checked against the whole packet (bpf_xdp_get_buff_len), not the linear
// part. That lets veth and multi-buffer drivers carry an MTU above a page (jumbo frames)
// with the classifier attached; the AF_XDP socket then needs frames as large as the packet
// (a hugepage arena), where the kernel copies the packet whole.
//
// Maps (configured from Rust by the `beeline-xdp` crate, see xdp/src/lib.rs):
//   config         ARRAY[1] of struct beeline_config: storage UDP port (0 = pass everything)
//   allow_v4       LPM_TRIE of IPv4 prefixes   (changed at runtime, no reload)
//   allow_v6       LPM_TRIE of IPv6 prefixes   (IPv4 prefixes also appear here IPv4-mapped)
//   xsks_map       XSKMAP: RX queue index -> AF_XDP socket. The name is fixed: DPDK's
//                  net_af_xdp PMD (devarg xdp_prog=) looks this map up by name to insert
//                  its sockets, keyed by RX queue.
//   counters       PERCPU_ARRAY[COUNTER_MAX] of {packets, bytes}, one slot per verdict
//
// Self-contained on purpose: only the kernel's UAPI headers (Debian: linux-libc-dev), no
// libbpf headers, so building it needs nothing but clang.

#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <linux/in.h>
#include <linux/ip.h>
#include <linux/ipv6.h>
#include <linux/types.h>
#include <linux/udp.h>

#define SEC(name) __attribute__((section(name), used))
#define __uint(name, val) int(*name)[val]
#define __type(name, val) typeof(val) *name
#define beeline_inline inline __attribute__((always_inline))

#if __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
#define be16(x) ((__u16)__builtin_bswap16((__u16)(x)))
#else
#define be16(x) ((__u16)(x))
#endif

static void *(*bpf_map_lookup_elem)(void *map, const void *key) = (void *)BPF_FUNC_map_lookup_elem;
static long (*bpf_redirect_map)(void *map, __u64 key, __u64 flags) = (void *)BPF_FUNC_redirect_map;
static __u64 (*bpf_xdp_get_buff_len)(struct xdp_md *ctx) = (void *)BPF_FUNC_xdp_get_buff_len;

// Keep in sync with xdp/src/lib.rs: `Verdict` (the counter slots, same order and values),
// `Config` (struct beeline_config) and the map names (`CONFIG_MAP`, ...).
enum counter {
	COUNTER_PASS = 0,
	COUNTER_REDIRECT = 1,
	COUNTER_DROP_NOT_ALLOWED = 2,
	COUNTER_DROP_MALFORMED = 3,
	COUNTER_DROP_NO_SOCKET = 4,
	COUNTER_MAX = 5,
};

struct beeline_config {
	__u16 port_be; // storage UDP port, network byte order; 0 = classifier inactive
	__u16 reserved;
	__u32 flags;
};

struct counter_value {
	__u64 packets;
	__u64 bytes;
};

struct lpm_v4_key {
	__u32 prefixlen;
	__u8 addr[4];
};

struct lpm_v6_key {
	__u32 prefixlen;
	__u8 addr[16];
};

struct vlan_hdr {
	__be16 tci;
	__be16 encapsulated_proto;
};

// Beeline datagram header: magic 0xBEE1, then the version (docs/protocol.md). Version 2
// is the protocol; version 1 still goes to the node, which tells old clients to upgrade.
// The shortest datagram a node acts on is a version-1 header (64 bytes); version-2 data
// headers are 80, handshake messages a node receives 104 (Confirm) and 1200 (Initiate).
#define BEELINE_MAGIC_0 0xBE
#define BEELINE_MAGIC_1 0xE1
#define BEELINE_VERSION 2
#define BEELINE_VERSION_OLD 1
#define BEELINE_DATAGRAM_MIN 64

#define XSKS_MAX 64
#define ALLOW_PREFIXES_MAX 1024

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct beeline_config);
} config SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LPM_TRIE);
	__uint(max_entries, ALLOW_PREFIXES_MAX);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, struct lpm_v4_key);
	__type(value, __u8);
} allow_v4 SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LPM_TRIE);
	__uint(max_entries, ALLOW_PREFIXES_MAX);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, struct lpm_v6_key);
	__type(value, __u8);
} allow_v6 SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_XSKMAP);
	__uint(max_entries, XSKS_MAX);
	__type(key, __u32);
	__type(value, __u32);
} xsks_map SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, COUNTER_MAX);
	__type(key, __u32);
	__type(value, struct counter_value);
} counters SEC(".maps");

static beeline_inline int verdict(__u32 which, __u64 bytes, int action)
{
	struct counter_value *value = bpf_map_lookup_elem(&counters, &which);
	if (value) {
		// Per-CPU slot: no other CPU writes it, plain increments are enough.
		value->packets += 1;
		value->bytes += bytes;
	}
	return action;
}

SEC("xdp.frags")
int beeline_xdp(struct xdp_md *ctx)
{
	void *data = (void *)(long)ctx->data;
	void *data_end = (void *)(long)ctx->data_end;
	// The whole packet, linear part and fragments: what the IP and UDP lengths must fit.
	__u64 bytes = bpf_xdp_get_buff_len(ctx);
	__u32 zero = 0;

	struct beeline_config *cfg = bpf_map_lookup_elem(&config, &zero);
	if (!cfg || cfg->port_be == 0)
		return verdict(COUNTER_PASS, bytes, XDP_PASS);

	struct ethhdr *eth = data;
	if ((void *)(eth + 1) > data_end)
		return verdict(COUNTER_PASS, bytes, XDP_PASS);
	__u16 proto = eth->h_proto;
	void *l3 = eth + 1;
	if (proto == be16(ETH_P_8021Q) || proto == be16(ETH_P_8021AD)) {
		struct vlan_hdr *vlan = l3;
		if ((void *)(vlan + 1) > data_end)
			return verdict(COUNTER_PASS, bytes, XDP_PASS);
		proto = vlan->encapsulated_proto;
		l3 = vlan + 1;
	}

	struct udphdr *udp;
	__u32 l4_room; // bytes the IP header says follow it (UDP header + payload)
	int allowed;
	if (proto == be16(ETH_P_IP)) {
		struct iphdr *ip = l3;
		if ((void *)(ip + 1) > data_end || ip->protocol != IPPROTO_UDP)
			return verdict(COUNTER_PASS, bytes, XDP_PASS);
		// A non-first fragment carries no UDP header: it cannot be told apart, so it is
		// the kernel's (which drops it once the first fragment never arrives).
		if (ip->frag_off & be16(0x1fff))
			return verdict(COUNTER_PASS, bytes, XDP_PASS);
		__u32 ihl = ip->ihl * 4;
		if (ihl < sizeof(*ip))
			return verdict(COUNTER_PASS, bytes, XDP_PASS);
		udp = (void *)ip + ihl;
		if ((void *)(udp + 1) > data_end || udp->dest != cfg->port_be)
			return verdict(COUNTER_PASS, bytes, XDP_PASS);
		// From here on the packet is addressed to the storage port: it is Beeline's, and
		// whatever is wrong with it is dropped here rather than shown to anyone.
		if (ip->frag_off & be16(0x2000)) // more fragments: storage datagrams never fragment
			return verdict(COUNTER_DROP_MALFORMED, bytes, XDP_DROP);
		__u32 total = be16(ip->tot_len);
		if (total < ihl + sizeof(*udp) || (__u64)((void *)ip - data) + total > bytes)
			return verdict(COUNTER_DROP_MALFORMED, bytes, XDP_DROP);
		l4_room = total - ihl;
		struct lpm_v4_key key = {.prefixlen = 32};
		__builtin_memcpy(key.addr, &ip->saddr, sizeof(key.addr));
		allowed = bpf_map_lookup_elem(&allow_v4, &key) != 0;
	} else if (proto == be16(ETH_P_IPV6)) {
		struct ipv6hdr *ip6 = l3;
		if ((void *)(ip6 + 1) > data_end || ip6->nexthdr != IPPROTO_UDP)
			return verdict(COUNTER_PASS, bytes, XDP_PASS);
		udp = (void *)(ip6 + 1);
		if ((void *)(udp + 1) > data_end || udp->dest != cfg->port_be)
			return verdict(COUNTER_PASS, bytes, XDP_PASS);
		__u32 payload = be16(ip6->payload_len);
		if (payload < sizeof(*udp) || (__u64)((void *)udp - data) + payload > bytes)
			return verdict(COUNTER_DROP_MALFORMED, bytes, XDP_DROP);
		l4_room = payload;
		struct lpm_v6_key key = {.prefixlen = 128};
		__builtin_memcpy(key.addr, &ip6->saddr, sizeof(key.addr));
		allowed = bpf_map_lookup_elem(&allow_v6, &key) != 0;
	} else {
		return verdict(COUNTER_PASS, bytes, XDP_PASS);
	}

	__u32 udp_len = be16(udp->len);
	if (udp_len < sizeof(*udp) + BEELINE_DATAGRAM_MIN || udp_len > l4_room)
		return verdict(COUNTER_DROP_MALFORMED, bytes, XDP_DROP);
	__u8 *beeline = (void *)(udp + 1);
	if ((void *)(beeline + 3) > data_end || beeline[0] != BEELINE_MAGIC_0 || beeline[1] != BEELINE_MAGIC_1 ||
	    (beeline[2] != BEELINE_VERSION && beeline[2] != BEELINE_VERSION_OLD))
		return verdict(COUNTER_DROP_MALFORMED, bytes, XDP_DROP);
	if (!allowed)
		return verdict(COUNTER_DROP_NOT_ALLOWED, bytes, XDP_DROP);

	__u32 queue = ctx->rx_queue_index;
	if (!bpf_map_lookup_elem(&xsks_map, &queue))
		return verdict(COUNTER_DROP_NO_SOCKET, bytes, XDP_DROP);
	verdict(COUNTER_REDIRECT, bytes, XDP_REDIRECT);
	return bpf_redirect_map(&xsks_map, queue, XDP_DROP);
}

char LICENSE[] SEC("license") = "Apache-2.0";
