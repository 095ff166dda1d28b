"""Cryptography adapters: envelope encryption of secrets, password and API-key hashing,
and JWT signing and verification. Built on `cryptography` and the standard library.

The policy (what a token must claim, who may do what, when a key rotates) is in
the core (`core.domain.identity`, `core.domain.access`, `core.domain.rotation`);
these modules only do the arithmetic.
"""
