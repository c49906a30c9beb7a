//! What TCP does and tells for liveness: retransmissions that keep trying, and acknowledgements
//! as evidence where they prove the client and not a proxy.
//!
//! A lost probe or reply is retransmitted after the retransmission timeout, which doubles each
//! time (0.4, 0.8, 1.6, 3.2 s …): within a 10 s liveness timeout a lossy link gets only a few
//! chances. Linear timeouts for thin streams would help but the kernel never applies them under
//! BBR (it never leaves initial slow start in the kernel's eyes), so [`cap_retransmission_backoff`]
//! caps the timeout at one second instead (Linux ≥ 6.15; older kernels keep their back-off).
//!
//! On a lossy link a live WebSocket peer's Pong can be stuck for seconds in its TCP's
//! retransmission back-off, while its kernel keeps acknowledging every probe we send. When the
//! gateway's TCP peer is the client's own host, those acknowledgements are timely replies from
//! it (see `core::liveness`). Behind a TLS-terminating proxy or load balancer they are the
//! proxy's, which acknowledges everything whether the client is there or not: there they prove
//! nothing and must never keep a session alive.
//!
//! Which connections count is [`TcpAckEvidence`]: by default (`auto`) only connections that
//! show no sign of a proxy — the peer address is not loopback or private (proxies and load
//! balancers sit in the same network as the gateway) and the upgrade request carries no
//! forwarding header.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::os::fd::{AsRawFd, BorrowedFd, RawFd};
use std::time::Duration;

use hyper::HeaderMap;

use crate::core::liveness::TransportReport;
use serde::Deserialize;
use tokio::net::TcpStream;

/// Whether TCP acknowledgements count as liveness evidence.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum TcpAckEvidence {
    /// For connections without a sign of a proxy in between (see the module documentation).
    #[default]
    Auto,
    /// For every connection: only when nothing terminates TCP between clients and the
    /// gateway (direct, or a pass-through layer-4 load balancer on a private network).
    Always,
    /// Never: only the application's own replies count.
    Never,
}

/// `TCP_RTO_MAX_MS` (Linux 6.15), not in the libc crate yet.
const TCP_RTO_MAX_MS: libc::c_int = 44;
/// The smallest cap the kernel accepts.
const RTO_CAP_MS: libc::c_int = 1000;

/// Retransmits a lost segment at least every second however many times it was lost (see the
/// module documentation). An error means the kernel predates the option.
pub fn cap_retransmission_backoff(tcp: &TcpStream) -> std::io::Result<()> {
    // SAFETY: a valid descriptor (borrowed from a live TcpStream) and a c_int option value of
    // the size passed.
    let set = unsafe {
        libc::setsockopt(
            tcp.as_raw_fd(),
            libc::IPPROTO_TCP,
            TCP_RTO_MAX_MS,
            (&RTO_CAP_MS as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if set == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

/// Headers a proxy adds to the requests it forwards.
const FORWARDING_HEADERS: [&str; 6] = [
    "forwarded",
    "x-forwarded-for",
    "x-real-ip",
    "via",
    "cf-connecting-ip",
    "true-client-ip",
];

impl TcpAckEvidence {
    /// Whether this connection's TCP acknowledgements come from the client's own host.
    pub fn applies(self, peer: IpAddr, request: &HeaderMap) -> bool {
        match self {
            TcpAckEvidence::Always => true,
            TcpAckEvidence::Never => false,
            TcpAckEvidence::Auto => {
                !is_local_network(peer)
                    && !FORWARDING_HEADERS
                        .iter()
                        .any(|name| request.contains_key(*name))
            }
        }
    }
}

/// Loopback, private, link-local and unique-local addresses: where a proxy in front of the
/// gateway connects from.
fn is_local_network(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => is_local_v4(v4),
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => is_local_v4(v4),
            None => is_local_v6(v6),
        },
    }
}

fn is_local_v4(ip: Ipv4Addr) -> bool {
    ip.is_loopback() || ip.is_private() || ip.is_link_local() || ip.is_unspecified()
}

fn is_local_v6(ip: Ipv6Addr) -> bool {
    ip.is_loopback() || ip.is_unspecified() || ip.is_unique_local() || ip.is_unicast_link_local()
}

/// Reads a [`TransportReport`] from the kernel (TCP_INFO).
///
/// Holds the descriptor number, not a duplicate: a duplicate per connection would halve the
/// connections one process can hold. The socket's cookie (unique for the kernel's lifetime)
/// is checked after each read, so a descriptor closed and reused by another connection in
/// between is never read as ours.
#[derive(Debug, Clone, Copy)]
pub struct TcpWitness {
    fd: RawFd,
    cookie: u64,
}

impl TcpWitness {
    pub fn new(tcp: &TcpStream) -> Option<TcpWitness> {
        let cookie = socket2::SockRef::from(tcp).cookie().ok()?;
        Some(TcpWitness {
            fd: tcp.as_raw_fd(),
            cookie,
        })
    }

    /// `None` once the socket is gone, or where the kernel does not report it.
    pub fn read(&self) -> Option<TransportReport> {
        let mut info = std::mem::MaybeUninit::<libc::tcp_info>::zeroed();
        let mut len = std::mem::size_of::<libc::tcp_info>() as libc::socklen_t;
        // SAFETY: `info` is a writable buffer of `len` bytes; the kernel writes at most `len`
        // bytes into it and reports how many. A descriptor that is closed fails with EBADF;
        // one that was reused is caught by the cookie check below.
        let read = unsafe {
            libc::getsockopt(
                self.fd,
                libc::IPPROTO_TCP,
                libc::TCP_INFO,
                info.as_mut_ptr().cast(),
                &mut len,
            )
        };
        // Older kernels fill less of the struct (the out-of-order count came in Linux 5.4).
        let needed =
            std::mem::offset_of!(libc::tcp_info, tcpi_rcv_ooopack) + std::mem::size_of::<u32>();
        if read != 0 || (len as usize) < needed {
            return None;
        }
        // SAFETY: the descriptor is only borrowed for the call; if it was closed meanwhile the
        // call fails, and if it was reused the cookie differs.
        let fd = unsafe { BorrowedFd::borrow_raw(self.fd) };
        if socket2::SockRef::from(&fd).cookie().ok()? != self.cookie {
            return None;
        }
        // SAFETY: zero-initialised, and the kernel wrote the fields up to the last one we read
        // (checked `len` above).
        let info = unsafe { info.assume_init() };
        Some(TransportReport {
            last_ack_age: Duration::from_millis(u64::from(info.tcpi_last_ack_recv)),
            out_of_order_packets: info.tcpi_rcv_ooopack,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use hyper::header::HeaderValue;

    #[test]
    fn auto_trusts_only_connections_without_a_sign_of_a_proxy() {
        let none = HeaderMap::new();
        let public: IpAddr = "198.51.100.7".parse().expect("ip");
        let auto = TcpAckEvidence::Auto;
        assert!(auto.applies(public, &none));
        assert!(auto.applies("2001:db8::1".parse().expect("ip"), &none));
        for local in [
            "127.0.0.1",
            "10.1.2.3",
            "172.16.0.9",
            "192.168.1.1",
            "169.254.3.4",
            "::1",
            "fd00::5",
            "fe80::1",
            "::ffff:10.0.0.1",
        ] {
            let ip: IpAddr = local.parse().expect("ip");
            assert!(
                !auto.applies(ip, &none),
                "{local} is where proxies connect from"
            );
            assert!(TcpAckEvidence::Always.applies(ip, &none));
        }
        for header in FORWARDING_HEADERS {
            let mut forwarded = HeaderMap::new();
            forwarded.insert(header, HeaderValue::from_static("203.0.113.9"));
            assert!(!auto.applies(public, &forwarded), "{header} names a proxy");
        }
        assert!(!TcpAckEvidence::Never.applies(public, &none));
    }

    #[tokio::test]
    async fn the_tcp_witness_reads_its_own_socket_and_nothing_after_it_closed() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        let mut client = TcpStream::connect(addr).await.expect("connect");
        let (mut server, _) = listener.accept().await.expect("accept");
        let witness = TcpWitness::new(&server).expect("cookie");
        // Bytes sent and acknowledged: the last acknowledgement is recent.
        tokio::io::AsyncWriteExt::write_all(&mut server, b"probe")
            .await
            .expect("write");
        let mut buf = [0u8; 5];
        tokio::io::AsyncReadExt::read_exact(&mut client, &mut buf)
            .await
            .expect("read");
        tokio::time::sleep(Duration::from_millis(20)).await;
        let seen = witness.read().expect("open socket");
        assert!(seen.last_ack_age < Duration::from_secs(5), "{seen:?}");
        assert_eq!(seen.out_of_order_packets, 0, "loopback delivers in order");
        drop(server);
        // A new socket may get the same descriptor number: never read as ours.
        let _other = TcpStream::connect(addr).await.expect("connect");
        let _accepted = listener.accept().await.expect("accept");
        assert_eq!(witness.read(), None);
    }
}
