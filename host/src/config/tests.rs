//! Reading the configuration: the defaults, bad values named, what a cluster node needs.

use super::*;
use std::collections::HashMap;

fn with(vars: &[(&str, &str)]) -> Result<Config, ConfigError> {
    let map: HashMap<String, String> = vars.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
    Config::from_lookup(|k| map.get(k).cloned())
}

#[test]
fn defaults_match_the_original() {
    let c = with(&[("AUTH_TOKEN", "t")]).unwrap();
    assert_eq!((c.port, c.bitrate_kbps, c.source_channel_capacity), (8080, 128, 16));
}

#[test]
fn a_cached_tracks_read_buffer_is_small_by_default_and_floored_as_the_original() {
    assert_eq!(with(&[("AUTH_TOKEN", "t")]).unwrap().cache_reader_buffer_bytes, 8192);
    let set = |v: &str| with(&[("AUTH_TOKEN", "t"), ("CACHE_READER_BUFFER_BYTES", v)]).unwrap();
    assert_eq!(set("65536").cache_reader_buffer_bytes, 65536);
    assert_eq!(set("100").cache_reader_buffer_bytes, 6000);
}

#[test]
fn bad_values_are_named() {
    assert_eq!(with(&[]).unwrap_err(), ConfigError::Missing("AUTH_TOKEN"));
    let e = with(&[("AUTH_TOKEN", "t"), ("PORT", "eighty")]).unwrap_err();
    assert!(e.to_string().starts_with("PORT=\"eighty\" is invalid"), "{e}");
    assert!(with(&[("AUTH_TOKEN", "t"), ("ENCODING_BITRATE", "1000")]).is_err());
    assert!(with(&[("AUTH_TOKEN", "t"), ("SOURCE_STREAM_CHANNEL_CAPACITY", "0")]).is_err());
    let e = with(&[("AUTH_TOKEN", "t"), ("MEDIA_ALLOW_HOSTS", "media.lan,http://x")]).unwrap_err();
    assert!(e.to_string().starts_with("MEDIA_ALLOW_HOSTS=\"media.lan,http://x\" is invalid"), "{e}");
    assert!(with(&[("AUTH_TOKEN", "t"), ("MEDIA_DNS_SERVER", "localhost")]).is_err());
}

#[test]
fn a_cluster_node_needs_redis_and_a_plain_name() {
    assert_eq!(with(&[("AUTH_TOKEN", "t")]).unwrap().cluster, None);
    let e = with(&[("AUTH_TOKEN", "t"), ("NODE_ID", "a")]).unwrap_err();
    assert!(e.to_string().contains("set REDIS_URI too"), "{e}");
    let redis = ("REDIS_URI", "redis://127.0.0.1/");
    assert!(with(&[("AUTH_TOKEN", "t"), redis, ("NODE_ID", "a b")]).is_err());
    assert!(with(&[("AUTH_TOKEN", "t"), redis, ("NODE_ID", "a"), ("CLUSTER_URL", "node-a:8080")]).is_err());
    let c = with(&[("AUTH_TOKEN", "t"), redis, ("NODE_ID", "node-a"), ("PORT", "9000")]).unwrap();
    let cluster = c.cluster.expect("cluster settings");
    assert_eq!((cluster.node_id.as_str(), cluster.url.as_str()), ("node-a", "http://127.0.0.1:9000"));
    assert_eq!(cluster.lease, Duration::from_secs(3));
}
