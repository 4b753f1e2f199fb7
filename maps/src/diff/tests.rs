use super::{pieces::walk_pieces, table::check_partition, *};

#[test]
fn partition_check_finds_gaps_overlaps_and_host_bits() {
    let full4 = [(0u128, 1u8, 0u16), (1 << 31, 1, 1)];
    assert_eq!(check_partition(&full4, 32), Ok(()));
    assert_eq!(check_partition(&full4[..1], 32), Err(1));
    assert_eq!(check_partition(&[(0, 1, 0), (1 << 30, 2, 0)], 32), Err(1));
    assert_eq!(check_partition(&[(1, 0, 0)], 32), Err(0));
    assert_eq!(check_partition(&[(0, 0, 0)], 128), Ok(()));
    assert_eq!(check_partition(&[(0, 33, 0)], 32), Err(0));
    assert_eq!(check_partition(&[], 128), Err(0));
}

#[test]
fn walk_visits_every_piece_once() {
    let a = [(0u128, 1u8, 1u16), (128, 1, 2)];
    let b = [(0u128, 2u8, 3u16), (64, 2, 4), (128, 2, 5), (192, 2, 6)];
    let mut got = Vec::new();
    walk_pieces(a.into_iter(), b.into_iter(), 8, |s, e, x, y| {
        got.push((s, e, x, y));
    });
    assert_eq!(
        got,
        vec![
            (0, 63, 1, 3),
            (64, 127, 1, 4),
            (128, 191, 2, 5),
            (192, 255, 2, 6)
        ]
    );
}

#[test]
fn transport_spreads_losses_over_gains() {
    let n = |v: &[(&str, f64)]| {
        v.iter()
            .map(|(a, b)| ((*a).to_owned(), *b))
            .collect::<Vec<_>>()
    };
    let mut got = Vec::new();
    transport(
        &n(&[("a", 1.0)]),
        &n(&[("b", 0.5), ("c", 0.5)]),
        |f, t, s| {
            got.push((f.to_owned(), t.to_owned(), s));
        },
    );
    assert_eq!(
        got,
        vec![("a".into(), "b".into(), 0.5), ("a".into(), "c".into(), 0.5)]
    );
    got.clear();
    transport(&n(&[("a", 1.0)]), &[], |f, t, s| {
        got.push((f.to_owned(), t.to_owned(), s));
    });
    assert_eq!(got, vec![("a".into(), NO_ANSWER.into(), 1.0)]);
    got.clear();
    transport(&n(&[("a", 1.0)]), &n(&[("a", 1.0)]), |f, t, s| {
        got.push((f.to_owned(), t.to_owned(), s));
    });
    assert!(got.is_empty());
}
