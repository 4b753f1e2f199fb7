use super::{client::forwarded_addr, *};

fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
    let mut h = HeaderMap::new();
    for (k, v) in pairs {
        h.append(
            header::HeaderName::from_bytes(k.as_bytes()).expect("name"),
            HeaderValue::from_str(v).expect("value"),
        );
    }
    h
}

fn ip(s: &str) -> IpAddr {
    s.parse().expect("address")
}

fn cidrs(list: &[&str]) -> Vec<Cidr> {
    list.iter()
        .map(|s| parse_trusted(s).expect("cidr"))
        .collect()
}

#[test]
fn forwarded_addresses() {
    for (s, want) in [
        ("192.0.2.1", Some("192.0.2.1")),
        (" 192.0.2.1:8080 ", Some("192.0.2.1")),
        ("2001:db8::1", Some("2001:db8::1")),
        ("[2001:db8::1]", Some("2001:db8::1")),
        ("[2001:db8::1]:443", Some("2001:db8::1")),
        ("::ffff:192.0.2.1", Some("::ffff:192.0.2.1")),
        ("[192.0.2.1]", None),
        ("[2001:db8::1]x", None),
        ("192.0.2.1:99999999", None),
        ("unknown", None),
        ("_hidden", None),
        ("", None),
        ("2001:db8::1:80:", None),
    ] {
        assert_eq!(forwarded_addr(s), want.map(ip), "{s:?}");
    }
}

#[test]
fn hostile_headers_never_panic() {
    let trusted = cidrs(&["198.18.0.0/15"]);
    let nasty = [
        "\"",
        "\"\\",
        "for=\"[",
        "for=\"[2001:db8::1]:\"",
        "for=\"\\\"\",,,;;;===",
        ",,,,",
        "for=ä, for=\"ü\"",
        "[[[]]]:::",
        "for=\"[2001:db8::1]:99999999999999999999\"",
        "  ;  for  =  192.0.2.1  ",
    ];
    for v in nasty {
        let mut h = HeaderMap::new();
        if let Ok(v) = HeaderValue::from_bytes(v.as_bytes()) {
            h.append("forwarded", v.clone());
            h.append("x-forwarded-for", v.clone());
            h.append("x-forwarded-proto", v.clone());
            h.append(header::HOST, v);
        }
        for which in [ForwardedHeader::XForwardedFor, ForwardedHeader::Forwarded] {
            let c = client_addr(ip("198.18.0.1"), &h, &trusted, which);
            assert!(c == ip("198.18.0.1") || !trusted.iter().any(|t| t.contains(c)));
            let args = RedirectArgs {
                trusted_proxies: trusted.clone(),
                forwarded_header: which,
                ..RedirectArgs::default()
            };
            let _ = scheme(ip("198.18.0.1"), &h, &args);
        }
        let _ = host_name(&Uri::from_static("/"), &h);
    }
    // Non-UTF-8 bytes (obs-text) in a header value.
    let mut h = HeaderMap::new();
    h.append(
        "x-forwarded-for",
        HeaderValue::from_bytes(b"192.0.2.1, \xff\xfe").expect("obs-text"),
    );
    assert_eq!(
        client_addr(
            ip("198.18.0.1"),
            &h,
            &trusted,
            ForwardedHeader::XForwardedFor
        ),
        ip("198.18.0.1")
    );
}

#[test]
fn x_forwarded_for_from_the_right() {
    let trusted = cidrs(&["198.18.0.0/24", "2001:2::1"]);
    let xff = ForwardedHeader::XForwardedFor;
    let proxy = ip("198.18.0.1");
    let h = headers(&[("x-forwarded-for", "203.0.113.9, 192.0.2.7")]);
    // Untrusted peer: headers ignored.
    assert_eq!(
        client_addr(ip("192.0.2.200"), &h, &trusted, xff),
        ip("192.0.2.200")
    );
    // Trusted peer: the right-most address; the client's own claim on the left loses.
    assert_eq!(client_addr(proxy, &h, &trusted, xff), ip("192.0.2.7"));
    // Trusted hops are skipped; several header lines are one list.
    let h = headers(&[
        ("x-forwarded-for", "203.0.113.9, 192.0.2.7"),
        ("x-forwarded-for", "198.18.0.2, [2001:2::1]:1234"),
    ]);
    assert_eq!(client_addr(proxy, &h, &trusted, xff), ip("192.0.2.7"));
    // Only trusted addresses: the left-most.
    let h = headers(&[("x-forwarded-for", "198.18.0.3, 198.18.0.2")]);
    assert_eq!(client_addr(proxy, &h, &trusted, xff), ip("198.18.0.3"));
    // Garbage stops the walk at the last address before it.
    let h = headers(&[("x-forwarded-for", "192.0.2.7, nonsense, 198.18.0.2")]);
    assert_eq!(client_addr(proxy, &h, &trusted, xff), ip("198.18.0.2"));
    let h = headers(&[("x-forwarded-for", "nonsense")]);
    assert_eq!(client_addr(proxy, &h, &trusted, xff), proxy);
    // No header: the peer. A mapped peer counts as IPv4.
    assert_eq!(
        client_addr(ip("::ffff:198.18.0.1"), &HeaderMap::new(), &trusted, xff),
        proxy
    );
    // The other header is not read.
    let h = headers(&[("forwarded", "for=192.0.2.7")]);
    assert_eq!(client_addr(proxy, &h, &trusted, xff), proxy);
}

#[test]
fn rfc7239_forwarded() {
    let trusted = cidrs(&["198.18.0.0/24"]);
    let fwd = ForwardedHeader::Forwarded;
    let proxy = ip("198.18.0.1");
    let h = headers(&[(
        "forwarded",
        r#"for=192.0.2.60;proto=http;by=203.0.113.43, For="[2001:db8:cafe::17]:4711""#,
    )]);
    assert_eq!(
        client_addr(proxy, &h, &trusted, fwd),
        ip("2001:db8:cafe::17")
    );
    // Quoted commas and semicolons do not split; escapes resolve.
    let h = headers(&[(
        "forwarded",
        r#"for=192.0.2.1, by="a,b;c";for="198.18.0.9", for="\[2001:db8::2\]""#,
    )]);
    assert_eq!(client_addr(proxy, &h, &trusted, fwd), ip("2001:db8::2"));
    // Trusted hops skipped, unknown stops.
    let h = headers(&[("forwarded", "for=192.0.2.1, for=198.18.0.9")]);
    assert_eq!(client_addr(proxy, &h, &trusted, fwd), ip("192.0.2.1"));
    let h = headers(&[("forwarded", "for=192.0.2.1, for=unknown")]);
    assert_eq!(client_addr(proxy, &h, &trusted, fwd), proxy);
    // An element without for= is not an address either.
    let h = headers(&[("forwarded", "for=192.0.2.1, proto=https")]);
    assert_eq!(client_addr(proxy, &h, &trusted, fwd), proxy);
    // X-Forwarded-For is not read in this mode.
    let h = headers(&[("x-forwarded-for", "192.0.2.1")]);
    assert_eq!(client_addr(proxy, &h, &trusted, fwd), proxy);
    // Untrusted peer.
    let h = headers(&[("forwarded", "for=192.0.2.1")]);
    assert_eq!(
        client_addr(ip("192.0.2.9"), &h, &trusted, fwd),
        ip("192.0.2.9")
    );
}

#[test]
fn hosts() {
    let uri: Uri = "/x".parse().expect("uri");
    let host = |h: &str| host_name(&uri, &headers(&[("host", h)]));
    assert_eq!(
        host("WWW.cdn.example.net"),
        Some("www.cdn.example.net.".into())
    );
    assert_eq!(
        host("www.cdn.example.net.:8080"),
        Some("www.cdn.example.net.".into())
    );
    assert_eq!(host("198.18.0.1:80"), None);
    assert_eq!(host("[2001:2::1]:80"), None);
    assert_eq!(host("bad host"), None);
    assert_eq!(host(""), None);
    assert_eq!(host_name(&uri, &HeaderMap::new()), None);
    let abs: Uri = "http://dl.cdn.example.net:81/x".parse().expect("uri");
    assert_eq!(
        host_name(&abs, &headers(&[("host", "other.example")])),
        Some("dl.cdn.example.net.".into())
    );
}

#[test]
fn trusted_proxy_values() {
    assert_eq!(parse_trusted("10.0.0.0/8").map(|c| c.len()), Ok(8));
    assert_eq!(parse_trusted("10.1.2.3").map(|c| c.len()), Ok(32));
    assert_eq!(
        parse_trusted("::ffff:10.1.2.3").map(|c| c.is_ipv4()),
        Ok(true)
    );
    assert_eq!(parse_trusted("2001:2::1").map(|c| c.len()), Ok(128));
    assert!(parse_trusted("10.0.0.1/8").is_err());
    assert!(parse_trusted("proxy").is_err());
}
