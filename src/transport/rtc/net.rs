//! The UDP side: one non-blocking socket per host address, all registered
//! with the loop's `Poll`, and the host addresses themselves.

use std::io;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};

use mio::net::UdpSocket;
use mio::{Interest, Registry, Token};
use str0m::net::Transmit;

use crate::config::PortRange;

/// Bytes of kernel buffer asked for per UDP socket, each way.
const SOCKET_BUFFER: usize = 4 << 20;

/// The bound sockets; socket `i` has token `first + i`.
pub struct Sockets {
    sockets: Vec<(UdpSocket, SocketAddr)>,
    first: Token,
}

impl Sockets {
    /// Binds one socket per address (the first free port of `ports` each) and
    /// registers them from token `first` on.
    pub fn bind(
        hosts: &[IpAddr],
        ports: PortRange,
        registry: &Registry,
        first: Token,
    ) -> io::Result<Sockets> {
        let mut sockets = Vec::new();
        for (i, &ip) in hosts.iter().enumerate() {
            let mut socket = bind_in_range(ip, ports)?;
            registry.register(&mut socket, Token(first.0 + i), Interest::READABLE)?;
            let addr = socket.local_addr()?;
            sockets.push((socket, addr));
        }
        Ok(Sockets { sockets, first })
    }

    /// Which socket a token names, if one of ours.
    pub fn index(&self, token: Token) -> Option<usize> {
        let i = token.0.checked_sub(self.first.0)?;
        (i < self.sockets.len()).then_some(i)
    }

    /// The bound addresses.
    pub fn addresses(&self) -> Vec<SocketAddr> {
        self.sockets.iter().map(|(_, addr)| *addr).collect()
    }

    /// Reads one datagram from socket `index`: (length, source, destination).
    pub fn recv(
        &self,
        index: usize,
        buf: &mut [u8],
    ) -> io::Result<(usize, SocketAddr, SocketAddr)> {
        let (socket, addr) = &self.sockets[index];
        let (n, source) = socket.recv_from(buf)?;
        Ok((n, source, *addr))
    }

    /// Sends a transmit from the socket bound to its source address. UDP may
    /// drop packets; a full send buffer drops this one (SCTP and ICE resend).
    pub fn send(&self, transmit: &Transmit) {
        let socket = self
            .sockets
            .iter()
            .find(|(_, addr)| *addr == transmit.source)
            .or_else(|| self.sockets.first());
        let Some((socket, _)) = socket else { return };
        if let Err(e) = socket.send_to(&transmit.contents, transmit.destination) {
            log::debug!("UDP send to {} failed: {e}", transmit.destination);
        }
    }
}

fn bind_in_range(ip: IpAddr, ports: PortRange) -> io::Result<UdpSocket> {
    let mut last_error = None;
    for port in ports.first..=ports.last {
        match UdpSocket::bind(SocketAddr::new(ip, port)) {
            Ok(socket) => {
                // The loop drains the socket between other work: a burst from a
                // fast sender must not overflow the default ~200 KiB buffer
                // (drops cost SCTP a retransmission timeout). The kernel caps
                // these at net.core.rmem_max / wmem_max.
                let options = socket2::SockRef::from(&socket);
                let _ = options.set_recv_buffer_size(SOCKET_BUFFER);
                let _ = options.set_send_buffer_size(SOCKET_BUFFER);
                return Ok(socket);
            }
            Err(e) => last_error = Some(e),
        }
    }
    let error = last_error.unwrap_or_else(|| io::Error::other("empty port range"));
    Err(io::Error::new(
        error.kind(),
        format!(
            "cannot bind UDP on {ip} port {}-{}: {error}",
            ports.first, ports.last
        ),
    ))
}

/// The addresses that get host candidates: 127.0.0.1 first, then `explicit`,
/// or when that is empty the address the default route leaves from (found
/// by connecting a UDP socket, which sends nothing).
pub fn host_addresses(explicit: &[IpAddr]) -> Vec<IpAddr> {
    let loopback = IpAddr::V4(Ipv4Addr::LOCALHOST);
    let mut hosts = vec![loopback];
    let others = if explicit.is_empty() {
        default_route_address().into_iter().collect()
    } else {
        explicit.to_vec()
    };
    for ip in others {
        if !hosts.contains(&ip) && !ip.is_unspecified() {
            hosts.push(ip);
        }
    }
    hosts
}

fn default_route_address() -> Option<IpAddr> {
    let socket = std::net::UdpSocket::bind((Ipv4Addr::UNSPECIFIED, 0)).ok()?;
    // TEST-NET-1 (RFC 5737): never routed anywhere; connect() sends nothing.
    socket.connect((Ipv4Addr::new(192, 0, 2, 1), 9)).ok()?;
    let ip = socket.local_addr().ok()?.ip();
    (!ip.is_loopback() && !ip.is_unspecified()).then_some(ip)
}
