/* Out-of-line wrappers for DPDK's static-inline functions and thread-local errno, so
 * bindgen-generated Rust can call them. Every function only forwards its arguments. */
#ifndef BEELINE_DPDK_SHIM_H
#define BEELINE_DPDK_SHIM_H

#include <rte_config.h>
#include <rte_eal.h>
#include <rte_errno.h>
#include <rte_ethdev.h>
#include <rte_lcore.h>
#include <rte_mbuf.h>
#include <rte_mempool.h>
#include <rte_memzone.h>
#include <rte_version.h>

int beeline_rte_errno(void);
const char *beeline_rte_strerror_last(void);
uint16_t beeline_rx_burst(uint16_t port, uint16_t queue, struct rte_mbuf **pkts, uint16_t count);
uint16_t beeline_tx_burst(uint16_t port, uint16_t queue, struct rte_mbuf **pkts, uint16_t count);
struct rte_mbuf *beeline_pktmbuf_alloc(struct rte_mempool *pool);
void beeline_pktmbuf_free(struct rte_mbuf *mbuf);
void beeline_pktmbuf_reset(struct rte_mbuf *mbuf);
unsigned int beeline_mempool_avail(const struct rte_mempool *pool);
/* Sets an mbuf up to send `len` bytes starting `data_off` bytes into its buffer. */
void beeline_mbuf_prepare_tx(struct rte_mbuf *mbuf, uint16_t data_off, uint16_t len);
uint16_t beeline_mbuf_data_off(const struct rte_mbuf *mbuf);
uint32_t beeline_mbuf_pkt_len(const struct rte_mbuf *mbuf);
uint16_t beeline_mbuf_nb_segs(const struct rte_mbuf *mbuf);
void *beeline_mbuf_buf_addr(const struct rte_mbuf *mbuf);
unsigned int beeline_lcore_id(void);
/* RSS over IPv4/IPv6 addresses and UDP ports (a function-like macro for bindgen). */
uint64_t beeline_rss_hf_ip_udp(void);
const char *beeline_version(void);

#endif
