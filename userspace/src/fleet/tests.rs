use super::{args::parse_box_name, *};

#[test]
fn endpoints_and_box_names() {
    assert_eq!(
        parse_endpoints("etcd://127.0.0.1:2379,10.0.0.2:2379"),
        Ok(Endpoints(vec![
            "http://127.0.0.1:2379".to_owned(),
            "http://10.0.0.2:2379".to_owned()
        ]))
    );
    assert_eq!(
        parse_endpoints("etcd://[::1]:2379"),
        Ok(Endpoints(vec!["http://[::1]:2379".to_owned()]))
    );
    for bad in [
        "etcd://",
        "etcd://host",
        "etcd://host:0",
        "etcd://:2379",
        "etcd://h:p/x",
    ] {
        assert!(parse_endpoints(bad).is_err(), "{bad}");
    }
    assert!(parse_box_name("fra-dns1.example").is_ok());
    for bad in ["", "a/b", "a b", &"x".repeat(64)] {
        assert!(parse_box_name(bad).is_err(), "{bad}");
    }
}

#[test]
fn digests() {
    assert_eq!(
        hex(&sha256(b"abc")),
        "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
    );
}
