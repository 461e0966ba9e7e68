//! Building Prometheus metric families for the text exposition format: the node's
//! `/metrics` and the tagger's share these, so every exporter writes the same shapes.

use prometheus::proto::{Counter, Gauge, LabelPair, Metric, MetricFamily, MetricType};

/// A family `name` of `kind` with its help text and samples.
pub fn family(name: &str, help: &str, kind: MetricType, metrics: Vec<Metric>) -> MetricFamily {
    let mut family = MetricFamily::default();
    family.set_name(name.to_owned());
    family.set_help(help.to_owned());
    family.set_field_type(kind);
    family.set_metric(metrics);
    family
}

/// Label pairs in the order given.
pub fn labels(pairs: &[(&str, &str)]) -> Vec<LabelPair> {
    pairs
        .iter()
        .map(|(name, value)| {
            let mut pair = LabelPair::default();
            pair.set_name((*name).to_owned());
            pair.set_value((*value).to_owned());
            pair
        })
        .collect()
}

/// One counter sample.
pub fn counter(value: u64, label_pairs: &[(&str, &str)]) -> Metric {
    let mut metric = Metric::default();
    let mut counter = Counter::default();
    counter.set_value(value as f64);
    metric.set_counter(counter);
    metric.set_label(labels(label_pairs));
    metric
}

/// One gauge sample.
pub fn gauge(value: f64, label_pairs: &[(&str, &str)]) -> Metric {
    let mut metric = Metric::default();
    let mut gauge = Gauge::default();
    gauge.set_value(value);
    metric.set_gauge(gauge);
    metric.set_label(labels(label_pairs));
    metric
}
