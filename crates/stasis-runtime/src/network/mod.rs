//! Container networking: one bridge (`stasis0`) on a private /16, a veth
//! pair per container, an IP address recorded by IPAM, published ports by
//! nftables DNAT in one table of ours (`stasis`), masquerade for the way out.
//! Everything a container added is removed with it.
