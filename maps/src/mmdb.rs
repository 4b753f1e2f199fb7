//! A small `MaxMind` DB writer (tests, the demo databases and the bench), and a
//! deterministic synthetic country + ASN database generator.
use std::net::IpAddr;

/// A data-section value.
#[derive(Clone, Debug, PartialEq)]
pub enum Value {
    String(String),
    U16(u16),
    U32(u32),
    U64(u64),
    Double(f64),
    Bool(bool),
    Array(Vec<Value>),
    /// Keys in the order given.
    Map(Vec<(String, Value)>),
}

/// Builds a `MaxMind` DB in memory. Later inserts win over earlier ones where they
/// overlap.
#[derive(Debug)]
pub struct Writer {
    _priv: (),
}

impl Writer {
    /// `ip_version` 4 or 6. An IPv6 database keeps IPv4 networks at `::/96`.
    #[must_use]
    pub fn new(ip_version: u8, database_type: &str) -> Self {
        let _ = (ip_version, database_type);
        unimplemented!()
    }

    /// Inserts `addr/len` with `value`.
    pub fn insert(&mut self, addr: IpAddr, len: u8, value: &Value) {
        let _ = (addr, len, value);
        unimplemented!()
    }

    /// The database file's bytes.
    #[must_use]
    pub fn to_bytes(&self) -> Vec<u8> {
        unimplemented!()
    }
}
