//! An independent check of a response against its query, for the fuzz target and the
//! tests: hickory-proto decodes the response (another implementation's parser), and
//! what every response must satisfy is compared with what the query asked.
use hickory_proto::{
    op::{Message as Decoded, MessageType},
    rr::{
        rdata::opt::{EdnsCode, EdnsOption},
        DNSClass, RecordType,
    },
};

use super::{
    parse::{self, EcsError, FormatError, Message},
    respond::{rcode, Transport},
};

/// Why a response is wrong for its query.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct CheckError(String);

macro_rules! ensure {
    ($cond:expr, $($fmt:tt)+) => {
        if !$cond {
            return Err(CheckError(format!($($fmt)+)));
        }
    };
}

/// Checks `response`, which the server sent over `transport` for `query`.
pub fn check_response(
    query: &[u8],
    response: &[u8],
    transport: Transport,
) -> Result<(), CheckError> {
    let q = parse::parse(query)
        .map_err(|d| CheckError(format!("a response to a message that is dropped ({d:?})")))?;
    let d = Decoded::from_vec(response)
        .map_err(|e| CheckError(format!("hickory-proto cannot decode the response: {e}")))?;
    let md = &d.metadata;
    let header = |i: usize| response.get(i).copied().unwrap_or(0);
    let count = |i: usize| u16::from_be_bytes([header(4 + 2 * i), header(5 + 2 * i)]);

    header_flags(&q, &d, response)?;
    let rc = u16::from(md.response_code);

    // The question, byte for byte as sent.
    match count(0) {
        0 => {}
        1 => {
            let qq = q.question.ok_or_else(|| {
                CheckError("a question in the response, none parsed in the query".into())
            })?;
            let end = parse::HEADER_LEN + qq.raw.len();
            ensure!(
                response.get(parse::HEADER_LEN..end) == Some(qq.raw),
                "question not copied as sent"
            );
        }
        n => ensure!(false, "QDCOUNT {n}"),
    }
    ensure!(usize::from(count(1)) == d.answers.len(), "ANCOUNT");
    ensure!(usize::from(count(2)) == d.authorities.len(), "NSCOUNT");
    ensure!(
        usize::from(count(3)) == d.additionals.len() + usize::from(d.edns.is_some()),
        "ARCOUNT"
    );
    for r in d.answers.iter().chain(&d.authorities).chain(&d.additionals) {
        ensure!(
            r.dns_class == DNSClass::IN,
            "a record of class {}",
            r.dns_class
        );
    }
    if let (Some(qq), Some(dq)) = (q.question, d.queries.first()) {
        for r in &d.answers {
            if matches!(r.record_type(), RecordType::A | RecordType::AAAA) {
                // Name equality is case-insensitive.
                ensure!(
                    r.name == *dq.name(),
                    "answer owner {} for question {}",
                    r.name,
                    dq.name()
                );
                ensure!(u16::from(r.record_type()) == qq.qtype, "answer type");
            }
        }
    }
    if md.truncation {
        ensure!(transport == Transport::Udp, "TC=1 over TCP");
        ensure!(
            d.answers.is_empty() && d.authorities.is_empty() && d.additionals.is_empty(),
            "records in a truncated response"
        );
    }
    let limit = match transport {
        Transport::Tcp => 65535,
        Transport::Udp => q
            .edns
            .map_or(512, |e| usize::from(e.payload).clamp(512, 1232)),
    };
    ensure!(
        response.len() <= limit,
        "{} bytes for a limit of {limit}",
        response.len()
    );

    edns(&q, &d, rc)?;

    // Our own parser reads our own output (as a query): every name is well formed,
    // every pointer goes back. (A response's ECS scope is no query's.)
    let mut copy = response.to_vec();
    if let Some(b) = copy.get_mut(2) {
        *b &= 0x7F;
    }
    let own = parse::parse(&copy).map_err(|d| CheckError(format!("own parser: {d:?}")))?;
    ensure!(
        matches!(
            own.error,
            None | Some(
                FormatError::QuestionCount(0)
                    | FormatError::QuestionOpt
                    | FormatError::Ecs(EcsError::Scope(_))
            )
        ),
        "own parser: {:?}",
        own.error
    );
    Ok(())
}

/// Header bits and the RCODE against the query.
fn header_flags(q: &Message<'_>, d: &Decoded, response: &[u8]) -> Result<(), CheckError> {
    let md = &d.metadata;
    let header = |i: usize| response.get(i).copied().unwrap_or(0);
    ensure!(
        md.id == q.header.id,
        "id {} for query id {}",
        md.id,
        q.header.id
    );
    ensure!(md.message_type == MessageType::Response, "QR=0");
    ensure!(
        u8::from(md.op_code) == q.header.opcode(),
        "opcode {} for query opcode {}",
        u8::from(md.op_code),
        q.header.opcode()
    );
    ensure!(!md.recursion_available, "RA=1");
    ensure!(!md.authentic_data, "AD=1");
    ensure!(header(3) & 0x40 == 0, "Z=1");
    ensure!(md.recursion_desired == q.header.rd(), "RD not copied");
    ensure!(md.checking_disabled == q.header.cd(), "CD not copied");
    let rc = u16::from(md.response_code);
    if md.authoritative {
        ensure!(
            rc == rcode::NOERROR || rc == rcode::NXDOMAIN,
            "AA=1 with RCODE {rc}"
        );
    }
    if q.header.opcode() != 0 {
        ensure!(
            rc == rcode::NOTIMP,
            "RCODE {rc} for opcode {}",
            q.header.opcode()
        );
    } else if q.error.is_some() {
        ensure!(
            rc == rcode::FORMERR,
            "RCODE {rc} for a malformed query: {:?}",
            q.error
        );
    } else {
        ensure!(rc != rcode::FORMERR, "FORMERR for a well-formed query");
    }

    Ok(())
}

/// The OPT record against the query's.
fn edns(q: &Message<'_>, d: &Decoded, rc: u16) -> Result<(), CheckError> {
    // EDNS: an OPT only when the query had one; payload 1232, version 0, no flags.
    match (&d.edns, q.edns) {
        (Some(e), Some(qe)) => {
            ensure!(e.max_payload() == 1232, "payload {}", e.max_payload());
            ensure!(e.version() == 0, "EDNS version {}", e.version());
            ensure!(!e.flags().dnssec_ok && e.flags().z == 0, "EDNS flags set");
            if qe.version > 0 && q.error.is_none() && q.header.opcode() == 0 {
                ensure!(
                    rc == rcode::BADVERS,
                    "RCODE {rc} for EDNS version {}",
                    qe.version
                );
            }
            for (code, _) in e.options().as_ref() {
                ensure!(*code == EdnsCode::Subnet, "option {code:?} echoed");
            }
            if let Some(EdnsOption::Subnet(s)) = e.option(EdnsCode::Subnet) {
                let qe_ecs = qe
                    .ecs
                    .ok_or_else(|| CheckError("ECS in the response, none in the query".into()))?;
                ensure!(
                    s.source_prefix() == qe_ecs.source_prefix,
                    "ECS source prefix changed"
                );
                if qe_ecs.source_prefix > 0 {
                    ensure!(Some(s.addr()) == qe_ecs.client(), "ECS address changed");
                } else {
                    ensure!(s.scope_prefix() == 0, "scope for source prefix 0");
                }
                let max = if qe_ecs.family == 1 { 32 } else { 128 };
                ensure!(s.scope_prefix() <= max, "scope {}", s.scope_prefix());
            }
        }
        (Some(_), None) => ensure!(false, "OPT in the response, none in the query"),
        (None, Some(_)) => ensure!(
            q.header.opcode() != 0 && q.error.is_some(),
            "no OPT in the response to a query with one"
        ),
        (None, None) => {}
    }

    Ok(())
}
