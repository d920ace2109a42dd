//! Which addresses the link previewer may connect to: globally routable unicast only.
//!
//! Everything is decided on parsed `IpAddr` values (std's predicates plus `ipnet` tables of the
//! IANA special-purpose registries), never on strings. IPv6 is an allow-list (global unicast
//! `2000::/3`, minus its special blocks, plus NAT64 of a public IPv4); IPv4 is a deny-list of
//! every non-global block.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use ipnet::{Ipv4Net, Ipv6Net};

/// Why an address is refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Blocked {
    Unspecified,
    /// `0.0.0.0/8`: "this network".
    ThisNetwork,
    Loopback,
    /// RFC 1918.
    Private,
    /// `100.64.0.0/10` (carrier-grade NAT).
    SharedAddressSpace,
    LinkLocal,
    Multicast,
    Broadcast,
    Documentation,
    Benchmarking,
    /// `192.0.0.0/24`, `2001::/23`: IETF protocol assignments.
    ProtocolAssignments,
    /// `240.0.0.0/4`, the old 6to4 relay anycast, deprecated site-local IPv6.
    Reserved,
    /// `fc00::/7`.
    UniqueLocal,
    /// `::ffff:a.b.c.d`: always refused (no real DNS answer looks like this).
    Ipv4Mapped,
    /// `::a.b.c.d` (deprecated).
    Ipv4Compatible,
    /// `2002::/16` embedding a non-public IPv4.
    SixToFour,
    /// `64:ff9b::/96` embedding a non-public IPv4, or the local-use NAT64 prefix.
    Nat64,
    /// `2001::/32`.
    Teredo,
    /// IPv6 outside global unicast `2000::/3`.
    NotGlobalUnicast,
}

impl fmt::Display for Blocked {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Unspecified => "an unspecified address",
            Self::ThisNetwork => "a 'this network' address",
            Self::Loopback => "a loopback address",
            Self::Private => "a private address",
            Self::SharedAddressSpace => "a shared (carrier-grade NAT) address",
            Self::LinkLocal => "a link-local address",
            Self::Multicast => "a multicast address",
            Self::Broadcast => "a broadcast address",
            Self::Documentation => "a documentation address",
            Self::Benchmarking => "a benchmarking address",
            Self::ProtocolAssignments => "a special-purpose address",
            Self::Reserved => "a reserved address",
            Self::UniqueLocal => "a unique-local address",
            Self::Ipv4Mapped => "an IPv4-mapped IPv6 address",
            Self::Ipv4Compatible => "an IPv4-compatible IPv6 address",
            Self::SixToFour => "a 6to4 address embedding a non-public IPv4 address",
            Self::Nat64 => "a NAT64 address embedding a non-public IPv4 address",
            Self::Teredo => "a Teredo address",
            Self::NotGlobalUnicast => "not a global unicast address",
        })
    }
}

const fn v4(a: u8, b: u8, c: u8, d: u8, len: u8) -> Ipv4Net {
    Ipv4Net::new_assert(Ipv4Addr::new(a, b, c, d), len)
}

#[allow(clippy::too_many_arguments)]
const fn v6(a: u16, b: u16, c: u16, d: u16, e: u16, f: u16, g: u16, h: u16, len: u8) -> Ipv6Net {
    Ipv6Net::new_assert(Ipv6Addr::new(a, b, c, d, e, f, g, h), len)
}

/// IPv4 blocks that std's stable predicates do not name.
const V4_BLOCKS: &[(Ipv4Net, Blocked)] = &[
    (v4(0, 0, 0, 0, 8), Blocked::ThisNetwork),
    (v4(100, 64, 0, 0, 10), Blocked::SharedAddressSpace),
    (v4(192, 0, 0, 0, 24), Blocked::ProtocolAssignments),
    (v4(192, 88, 99, 0, 24), Blocked::Reserved),
    (v4(198, 18, 0, 0, 15), Blocked::Benchmarking),
    (v4(240, 0, 0, 0, 4), Blocked::Reserved),
];

const GLOBAL_UNICAST: Ipv6Net = v6(0x2000, 0, 0, 0, 0, 0, 0, 0, 3);
const NAT64_WELL_KNOWN: Ipv6Net = v6(0x64, 0xff9b, 0, 0, 0, 0, 0, 0, 96);
const NAT64_LOCAL: Ipv6Net = v6(0x64, 0xff9b, 1, 0, 0, 0, 0, 0, 48);
const SIX_TO_FOUR: Ipv6Net = v6(0x2002, 0, 0, 0, 0, 0, 0, 0, 16);
const IPV4_COMPATIBLE: Ipv6Net = v6(0, 0, 0, 0, 0, 0, 0, 0, 96);
const SITE_LOCAL: Ipv6Net = v6(0xfec0, 0, 0, 0, 0, 0, 0, 0, 10);

/// IPv6 blocks inside `2000::/3` that are not globally reachable (most specific first).
const V6_BLOCKS: &[(Ipv6Net, Blocked)] = &[
    (v6(0x2001, 0xdb8, 0, 0, 0, 0, 0, 0, 32), Blocked::Documentation),
    (v6(0x3fff, 0, 0, 0, 0, 0, 0, 0, 20), Blocked::Documentation),
    (v6(0x2001, 0x2, 0, 0, 0, 0, 0, 0, 48), Blocked::Benchmarking),
    (v6(0x2001, 0, 0, 0, 0, 0, 0, 0, 32), Blocked::Teredo),
    (v6(0x2001, 0, 0, 0, 0, 0, 0, 0, 23), Blocked::ProtocolAssignments),
];

/// `Ok` when `ip` is a globally routable unicast address.
pub fn check(ip: IpAddr) -> Result<(), Blocked> {
    match ip {
        IpAddr::V4(ip) => check_v4(ip),
        IpAddr::V6(ip) => check_v6(ip),
    }
}

pub fn check_v4(ip: Ipv4Addr) -> Result<(), Blocked> {
    if ip.is_unspecified() {
        return Err(Blocked::Unspecified);
    }
    if ip.is_broadcast() {
        return Err(Blocked::Broadcast);
    }
    if ip.is_loopback() {
        return Err(Blocked::Loopback);
    }
    if ip.is_private() {
        return Err(Blocked::Private);
    }
    if ip.is_link_local() {
        return Err(Blocked::LinkLocal);
    }
    if ip.is_multicast() {
        return Err(Blocked::Multicast);
    }
    if ip.is_documentation() {
        return Err(Blocked::Documentation);
    }
    match V4_BLOCKS.iter().find(|(net, _)| net.contains(&ip)) {
        Some((_, why)) => Err(*why),
        None => Ok(()),
    }
}

pub fn check_v6(ip: Ipv6Addr) -> Result<(), Blocked> {
    if ip.is_unspecified() {
        return Err(Blocked::Unspecified);
    }
    if ip.is_loopback() {
        return Err(Blocked::Loopback);
    }
    if ip.to_ipv4_mapped().is_some() {
        return Err(Blocked::Ipv4Mapped);
    }
    if IPV4_COMPATIBLE.contains(&ip) {
        return Err(Blocked::Ipv4Compatible);
    }
    if ip.is_multicast() {
        return Err(Blocked::Multicast);
    }
    if ip.is_unicast_link_local() {
        return Err(Blocked::LinkLocal);
    }
    if SITE_LOCAL.contains(&ip) {
        return Err(Blocked::Reserved);
    }
    if ip.is_unique_local() {
        return Err(Blocked::UniqueLocal);
    }
    if NAT64_LOCAL.contains(&ip) {
        return Err(Blocked::Nat64);
    }
    if NAT64_WELL_KNOWN.contains(&ip) {
        let o = ip.octets();
        return check_v4(Ipv4Addr::new(o[12], o[13], o[14], o[15])).map_err(|_| Blocked::Nat64);
    }
    if !GLOBAL_UNICAST.contains(&ip) {
        return Err(Blocked::NotGlobalUnicast);
    }
    if let Some((_, why)) = V6_BLOCKS.iter().find(|(net, _)| net.contains(&ip)) {
        return Err(*why);
    }
    if SIX_TO_FOUR.contains(&ip) {
        let o = ip.octets();
        return check_v4(Ipv4Addr::new(o[2], o[3], o[4], o[5])).map_err(|_| Blocked::SixToFour);
    }
    Ok(())
}

/// The check the fetcher applies to every address it would connect to. `loopback_ports` is the
/// test-only allowance (`Config::allow_loopback_previews_for_tests`): a plain loopback address
/// (`127.0.0.0/8` or `::1`, never a mapped form) on one of those ports passes. Empty in production.
pub fn permitted(addr: SocketAddr, loopback_ports: &[u16]) -> Result<(), Blocked> {
    if addr.ip().is_loopback() && loopback_ports.contains(&addr.port()) {
        return Ok(());
    }
    check(addr.ip())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap_or_else(|_| panic!("test address {s}"))
    }

    #[track_caller]
    fn refused(s: &str, why: Blocked) {
        assert_eq!(check(ip(s)), Err(why), "{s}");
    }

    #[track_caller]
    fn allowed(s: &str) {
        assert_eq!(check(ip(s)), Ok(()), "{s}");
    }

    #[test]
    fn ipv4_non_public_ranges_are_refused() {
        refused("0.0.0.0", Blocked::Unspecified);
        refused("0.1.2.3", Blocked::ThisNetwork);
        refused("127.0.0.1", Blocked::Loopback);
        refused("127.255.255.254", Blocked::Loopback);
        refused("10.0.0.1", Blocked::Private);
        refused("10.255.255.255", Blocked::Private);
        refused("172.16.0.1", Blocked::Private);
        refused("172.31.255.255", Blocked::Private);
        refused("192.168.1.1", Blocked::Private);
        refused("100.64.0.1", Blocked::SharedAddressSpace);
        refused("100.127.255.255", Blocked::SharedAddressSpace);
        refused("169.254.169.254", Blocked::LinkLocal);
        refused("224.0.0.1", Blocked::Multicast);
        refused("239.255.255.250", Blocked::Multicast);
        refused("255.255.255.255", Blocked::Broadcast);
        refused("192.0.2.1", Blocked::Documentation);
        refused("198.51.100.7", Blocked::Documentation);
        refused("203.0.113.9", Blocked::Documentation);
        refused("198.18.0.1", Blocked::Benchmarking);
        refused("198.19.255.255", Blocked::Benchmarking);
        refused("192.0.0.8", Blocked::ProtocolAssignments);
        refused("192.88.99.1", Blocked::Reserved);
        refused("240.0.0.1", Blocked::Reserved);
        refused("250.1.2.3", Blocked::Reserved);
    }

    #[test]
    fn ipv4_public_addresses_pass_including_range_edges() {
        allowed("8.8.8.8");
        allowed("1.1.1.1");
        allowed("93.184.216.34");
        allowed("172.15.255.255");
        allowed("172.32.0.0");
        allowed("100.63.255.255");
        allowed("100.128.0.0");
        allowed("169.253.255.255");
        allowed("198.17.255.255");
        allowed("198.20.0.0");
        allowed("223.255.255.255");
        allowed("11.0.0.0");
        allowed("9.255.255.255");
    }

    #[test]
    fn ipv6_non_public_ranges_are_refused() {
        refused("::", Blocked::Unspecified);
        refused("::1", Blocked::Loopback);
        refused("fe80::1", Blocked::LinkLocal);
        refused("febf::1", Blocked::LinkLocal);
        refused("fec0::1", Blocked::Reserved);
        refused("fc00::1", Blocked::UniqueLocal);
        refused("fd12:3456:789a::1", Blocked::UniqueLocal);
        refused("ff02::1", Blocked::Multicast);
        refused("ff0e::1", Blocked::Multicast);
        refused("2001:db8::1", Blocked::Documentation);
        refused("3fff::1", Blocked::Documentation);
        refused("2001:2::1", Blocked::Benchmarking);
        refused("2001:0:4136:e378:8000:63bf:3fff:fdd2", Blocked::Teredo);
        refused("2001:10::1", Blocked::ProtocolAssignments);
        refused("100::1", Blocked::NotGlobalUnicast);
        refused("4000::1", Blocked::NotGlobalUnicast);
        refused("5f00::1", Blocked::NotGlobalUnicast);
        refused("64:ff9b:1::a00:1", Blocked::Nat64);
    }

    #[test]
    fn ipv4_mapped_and_compatible_forms_are_refused_whatever_they_embed() {
        refused("::ffff:127.0.0.1", Blocked::Ipv4Mapped);
        refused("::ffff:10.0.0.1", Blocked::Ipv4Mapped);
        refused("::ffff:169.254.169.254", Blocked::Ipv4Mapped);
        refused("::ffff:8.8.8.8", Blocked::Ipv4Mapped);
        refused("::ffff:7f00:1", Blocked::Ipv4Mapped);
        refused("::127.0.0.1", Blocked::Ipv4Compatible);
        refused("::8.8.8.8", Blocked::Ipv4Compatible);
        refused("::2", Blocked::Ipv4Compatible);
    }

    #[test]
    fn embedded_ipv4_in_6to4_and_nat64_is_checked() {
        refused("2002:7f00:1::1", Blocked::SixToFour);
        refused("2002:a00:1::", Blocked::SixToFour);
        refused("2002:a9fe:a9fe::1", Blocked::SixToFour);
        allowed("2002:808:808::1");
        refused("64:ff9b::7f00:1", Blocked::Nat64);
        refused("64:ff9b::a9fe:a9fe", Blocked::Nat64);
        refused("64:ff9b::c0a8:101", Blocked::Nat64);
        allowed("64:ff9b::808:808");
    }

    #[test]
    fn ipv6_global_unicast_passes() {
        allowed("2606:4700:4700::1111");
        allowed("2a00:1450:4001:80b::200e");
        allowed("2001:4860:4860::8888");
        allowed("2001:200::1");
    }

    #[test]
    fn test_allowance_admits_only_plain_loopback_on_listed_ports() {
        let ports = [4242];
        let sock = |s: &str| -> SocketAddr { s.parse().unwrap() };
        assert_eq!(permitted(sock("127.0.0.1:4242"), &ports), Ok(()));
        assert_eq!(permitted(sock("[::1]:4242"), &ports), Ok(()));
        assert_eq!(permitted(sock("127.0.0.1:4243"), &ports), Err(Blocked::Loopback));
        assert_eq!(permitted(sock("127.0.0.1:4242"), &[]), Err(Blocked::Loopback));
        assert_eq!(permitted(sock("[::ffff:127.0.0.1]:4242"), &ports), Err(Blocked::Ipv4Mapped));
        assert_eq!(permitted(sock("10.0.0.1:4242"), &ports), Err(Blocked::Private));
        assert_eq!(permitted(sock("169.254.169.254:4242"), &ports), Err(Blocked::LinkLocal));
        assert_eq!(permitted(sock("8.8.8.8:4242"), &ports), Ok(()));
    }
}
