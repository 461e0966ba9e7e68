#include "shim.h"

int beeline_rte_errno(void) { return rte_errno; }

const char *beeline_rte_strerror_last(void) { return rte_strerror(rte_errno); }

uint16_t beeline_rx_burst(uint16_t port, uint16_t queue, struct rte_mbuf **pkts, uint16_t count)
{
	return rte_eth_rx_burst(port, queue, pkts, count);
}

uint16_t beeline_tx_burst(uint16_t port, uint16_t queue, struct rte_mbuf **pkts, uint16_t count)
{
	return rte_eth_tx_burst(port, queue, pkts, count);
}

struct rte_mbuf *beeline_pktmbuf_alloc(struct rte_mempool *pool) { return rte_pktmbuf_alloc(pool); }

void beeline_pktmbuf_free(struct rte_mbuf *mbuf) { rte_pktmbuf_free(mbuf); }

void beeline_pktmbuf_reset(struct rte_mbuf *mbuf) { rte_pktmbuf_reset(mbuf); }

unsigned int beeline_mempool_avail(const struct rte_mempool *pool) { return rte_mempool_avail_count(pool); }

void beeline_mbuf_prepare_tx(struct rte_mbuf *mbuf, uint16_t data_off, uint16_t len)
{
	rte_pktmbuf_reset(mbuf);
	mbuf->data_off = data_off;
	mbuf->data_len = len;
	mbuf->pkt_len = len;
}

uint16_t beeline_mbuf_data_off(const struct rte_mbuf *mbuf) { return mbuf->data_off; }

uint32_t beeline_mbuf_pkt_len(const struct rte_mbuf *mbuf) { return mbuf->pkt_len; }

uint16_t beeline_mbuf_nb_segs(const struct rte_mbuf *mbuf) { return mbuf->nb_segs; }

void *beeline_mbuf_buf_addr(const struct rte_mbuf *mbuf) { return mbuf->buf_addr; }

unsigned int beeline_lcore_id(void) { return rte_lcore_id(); }

const char *beeline_version(void) { return rte_version(); }

uint64_t beeline_rss_hf_ip_udp(void) { return RTE_ETH_RSS_IP | RTE_ETH_RSS_UDP; }
