"""SSLFlags: the pure parser, and the context builder's eager checks."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from OpenSSL import SSL

from sslsocket import FlagError, InsecureClientWarning
from sslsocket.context import build_context
from sslsocket.flags import (
    DEFAULT_CIPHERS,
    DEFAULT_HANDSHAKE_TIMEOUT,
    Secret,
    Settings,
    parse_flags,
)

# ---- parsing: a string and an environment in, Settings out --------------------------------------------------


@pytest.mark.parametrize(
    ("flags", "expected"),
    [
        ("", Settings()),
        ("-cert server_cert.pem -key server_key.pem", Settings(certs=("server_cert.pem",), key="server_key.pem")),
        ("-cert client_cert.pem -cert client_key.pem", Settings(certs=("client_cert.pem", "client_key.pem"))),
        ("-verify 2 -CAfile ca.pem", Settings(verify=2, cafile="ca.pem")),
        ("-verify 1 -CApath /etc/ssl/certs -depth 3", Settings(verify=1, capath="/etc/ssl/certs", depth=3)),
        ("-cipher ECDHE-RSA-AES128-GCM-SHA256", Settings(cipher="ECDHE-RSA-AES128-GCM-SHA256")),
        ("-ciphersuites TLS_AES_128_GCM_SHA256", Settings(ciphersuites="TLS_AES_128_GCM_SHA256")),
        ("-log conn.log -servername example.org", Settings(log="conn.log", servername="example.org")),
        ("-timeout 2.5", Settings(timeout=2.5)),
        ("-idle_timeout 300", Settings(idle_timeout=300.0)),
        ("  -verify   0  ", Settings(verify=0)),
        ("-cert 'my server.pem'", Settings(certs=("my server.pem",))),
        ('-cert "a b.pem" -key c.pem', Settings(certs=("a b.pem",), key="c.pem")),
        ("-pass pass:hunter2", Settings(password=Secret("pass", "hunter2"))),
        ("-pass env:KEY_PASS", Settings(password=Secret("env", "KEY_PASS"))),
        ("-pass file:/run/pass", Settings(password=Secret("file", "/run/pass"))),
    ],
)
def test_parse(flags: str, expected: Settings) -> None:
    assert parse_flags(flags, env={}) == expected


@pytest.mark.parametrize(
    ("alias", "flag"),
    [
        ("-certfile x", "-cert x"),
        ("-keyfile x", "-key x"),
        ("-ciphers x", "-cipher x"),
        ("-cacertfile x", "-CAfile x"),
        ("-password x", "-pass pass:x"),
        ("-depth 4", "-depth 4"),
    ],
)
def test_the_old_port_programs_spellings_are_aliases(alias: str, flag: str) -> None:
    assert parse_flags(alias, env={}) == parse_flags(flag, env={})


def test_environment_variables_as_the_manual_says() -> None:
    env = {"SSL_CIPHER": "ECDHE-ECDSA-AES128-GCM-SHA256", "SSL_CERT_FILE": "/ca.pem", "SSL_CERT_DIR": "/certs"}
    got = parse_flags("", env=env)
    assert (got.cipher, got.cafile, got.capath) == ("ECDHE-ECDSA-AES128-GCM-SHA256", "/ca.pem", "/certs")
    # the flags win over the environment
    got = parse_flags("-cipher AES128-SHA -CAfile mine.pem", env=env)
    assert (got.cipher, got.cafile, got.capath) == ("AES128-SHA", "mine.pem", None)


def test_defaults() -> None:
    got = parse_flags("", env={})
    assert got.verify == 0 and got.timeout == DEFAULT_HANDSHAKE_TIMEOUT == 30


@pytest.mark.parametrize(
    ("flags", "culprit"),
    [
        ("-bogus 1", "'-bogus'"),
        ("-crt server.pem", "did you mean -cert"),
        ("-cert", "-cert needs an argument"),
        ("-cert -key k.pem", "-cert needs an argument"),
        ("-verify 7", "-verify 7"),
        ("-verify two", "-verify two"),
        ("-depth -1", "-depth"),
        ("-timeout 0", "-timeout 0"),
        ("-timeout soon", "-timeout soon"),
        ("-idle_timeout 0", "-idle_timeout 0"),
        ("-pass hunter2", "pass:TEXT"),
        ("-cert 'unclosed", "SSLFlags"),
        ("server.pem", "'server.pem'"),
    ],
)
def test_bad_flags_name_the_culprit(flags: str, culprit: str) -> None:
    with pytest.raises(FlagError) as info:
        parse_flags(flags, env={})
    assert culprit in str(info.value)
    assert isinstance(info.value, ValueError)


def test_flags_must_be_a_string() -> None:
    with pytest.raises(FlagError, match="bytes"):
        parse_flags(b"-verify 0", env={})  # type: ignore[arg-type]


def test_a_pass_phrase_never_shows() -> None:
    got = parse_flags("-pass pass:hunter2", env={})
    assert "hunter2" not in repr(got) and "hunter2" not in str(got)
    got = parse_flags("-password hunter2", env={})
    assert "hunter2" not in repr(got)


@settings(max_examples=300, deadline=None)
@given(
    st.lists(
        st.sampled_from(["-cert", "-verify", "-key", "-pass", "-timeout", "x", "0", "2", "'", "pass:a", "-"]),
        max_size=8,
    )
)
def test_any_string_parses_or_raises_flag_error(words: list[str]) -> None:
    try:
        parse_flags(" ".join(words), env={})
    except FlagError:
        pass


@settings(max_examples=200, deadline=None)
@given(st.text(max_size=60))
def test_random_text_parses_or_raises_flag_error(text: str) -> None:
    try:
        parse_flags(text, env={})
    except FlagError:
        pass


# ---- building a context: everything checked before any connection -------------------------------------------


def test_a_server_context(certs: Any) -> None:
    ctx = build_context(parse_flags(f"-cert {certs.server}", env={}), server=True)
    assert isinstance(ctx, SSL.Context)
    assert ctx.get_verify_mode() == SSL.VERIFY_NONE


def test_a_context_writes_whole_buffers_and_releases_idle_ones(certs: Any) -> None:
    ctx = build_context(parse_flags(f"-cert {certs.server}", env={}), server=True)
    mode = ctx.set_mode(0)  # OpenSSL answers with the mode now in force
    assert not mode & SSL._lib.SSL_MODE_ENABLE_PARTIAL_WRITE  # one SSL_write per 256 KiB, not per record
    assert mode & SSL.MODE_RELEASE_BUFFERS
    assert mode & SSL._lib.SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER  # a retried write may come from a new memoryview


def test_cert_and_key_in_separate_files_or_given_twice(certs: Any) -> None:
    build_context(parse_flags(f"-cert {certs.server_cert} -key {certs.server_key}", env={}), server=True)
    build_context(parse_flags(f"-cert {certs.server_cert} -cert {certs.server_key}", env={}), server=True)


@pytest.mark.parametrize("level", [1, 2])
def test_verify_modes(certs: Any, level: int) -> None:
    ctx = build_context(parse_flags(f"-cert {certs.server} -verify {level} -CAfile {certs.ca}", env={}), server=True)
    expected = SSL.VERIFY_PEER | (SSL.VERIFY_FAIL_IF_NO_PEER_CERT if level == 2 else 0)
    assert ctx.get_verify_mode() == expected


def test_a_server_must_have_a_certificate() -> None:
    with pytest.raises(FlagError, match="server must always have a certificate"):
        build_context(parse_flags("", env={}), server=True)


def test_a_client_at_verify_0_is_warned(certs: Any) -> None:
    with pytest.warns(InsecureClientWarning, match="checks nothing"):
        build_context(parse_flags("", env={}), server=False)


@pytest.mark.parametrize(
    ("flags", "culprit"),
    [
        ("-cert {d}/missing.pem", "missing.pem: No such file"),
        ("-cert {d}", "Is a directory"),
        ("-cert {server_cert} -key {d}/nokey.pem", "nokey.pem: No such file"),
        ("-cert {server_cert}", "no private key"),
        ("-cert {server_cert} -key {client}", "does not match"),
        ("-cert {ca} -key {server_key}", "does not match"),
        ("-cert {server_cert} -key {server_cert}", "holds no PEM private key"),
        ("-cert {server} -verify 2 -CAfile {d}/noca.pem", "noca.pem"),
    ],
)
def test_bad_files_are_refused_naming_them(certs: Any, flags: str, culprit: str) -> None:
    spelled = flags.format(
        d=certs.dir,
        server_cert=certs.server_cert,
        server_key=certs.server_key,
        client=certs.client,
        ca=certs.ca,
        server=certs.server,
    )
    with pytest.raises(FlagError, match=culprit):
        build_context(parse_flags(spelled, env={}), server=True)


def test_a_file_that_is_not_pem(certs: Any) -> None:
    junk = certs.dir / "junk.pem"
    junk.write_text("not a certificate\n")
    with pytest.raises(FlagError, match=r"junk\.pem: holds no PEM"):
        build_context(parse_flags(f"-cert {junk}", env={}), server=True)


def test_pass_phrase_sources(certs: Any, tmp_path: Any) -> None:
    base = f"-cert {certs.server_cert} -key {certs.protected_key}"
    build_context(parse_flags(f"{base} -pass 'pass:{certs.password}'", env={}), server=True)
    build_context(parse_flags(f"{base} -password '{certs.password}'", env={}), server=True)
    build_context(parse_flags(f"{base} -pass env:KEYPASS", env={}), server=True, env={"KEYPASS": certs.password})
    secret = tmp_path / "pass.txt"
    secret.write_text(certs.password + "\n")
    build_context(parse_flags(f"{base} -pass file:{secret}", env={}), server=True)


@pytest.mark.parametrize(
    ("extra", "culprit"),
    [
        ("", "protected by a pass phrase; give it with -pass"),
        ("-pass pass:wrong", "wrong pass phrase"),
        ("-pass env:UNSET_VARIABLE", "UNSET_VARIABLE is not set"),
        ("-pass file:/no/such/file", "/no/such/file"),
    ],
)
def test_pass_phrase_errors(certs: Any, extra: str, culprit: str) -> None:
    with pytest.raises(FlagError, match=culprit) as info:
        build_context(
            parse_flags(f"-cert {certs.server_cert} -key {certs.protected_key} {extra}", env={}), server=True, env={}
        )
    assert "wrong" not in str(info.value).replace("wrong pass phrase", "")


def test_a_pass_phrase_given_for_an_unprotected_key(certs: Any) -> None:
    with pytest.raises(FlagError, match="not protected"):
        build_context(parse_flags(f"-cert {certs.server} -pass pass:x", env={}), server=True)


@pytest.mark.parametrize(
    "name",
    [
        "NULL-MD5",
        "RC4-MD5",
        "EXP-RC4-MD5",
        "IDEA-CBC-MD5",
        "RC2-CBC-MD5",
        "EXP-RC2-CBC-MD",
        "DES-CBC-MD5",
        "DES-CBC-SHA",
        "DES-CBC3-MD5",
        "DES-CBC3-SHA",
        "DES-CFB-M1",
    ],
)
def test_the_manuals_ciphers_get_a_clear_error(certs: Any, name: str) -> None:
    with pytest.raises(FlagError) as info:
        build_context(parse_flags(f"-cert {certs.server} -cipher {name}", env={}), server=True)
    message = str(info.value)
    assert name in message and "gone" in message and "ECDHE" in message


def test_a_legacy_cipher_from_the_environment(certs: Any) -> None:
    with pytest.raises(FlagError, match="RC4-MD5"):
        build_context(parse_flags(f"-cert {certs.server}", env={"SSL_CIPHER": "RC4-MD5"}), server=True)


def test_unknown_ciphers_are_named(certs: Any) -> None:
    with pytest.raises(FlagError, match="NO-SUCH-CIPHER"):
        build_context(parse_flags(f"-cert {certs.server} -cipher NO-SUCH-CIPHER", env={}), server=True)
    with pytest.raises(FlagError, match="TLS_NO_SUCH"):
        build_context(parse_flags(f"-cert {certs.server} -ciphersuites TLS_NO_SUCH", env={}), server=True)


def test_modern_ciphers_are_accepted(certs: Any) -> None:
    build_context(
        parse_flags(
            f"-cert {certs.server} -cipher ECDHE-ECDSA-AES128-GCM-SHA256 -ciphersuites TLS_AES_128_GCM_SHA256", env={}
        ),
        server=True,
    )


def _suites(ctx: SSL.Context) -> list[str]:
    return SSL.Connection(ctx, None).get_cipher_list()


def test_the_default_tls12_suites_are_mozillas_intermediate_ecdhe_aead_ones(certs: Any) -> None:
    for server in (True, False):
        ctx = build_context(parse_flags(f"-cert {certs.server}", env={}), server=server)
        assert ctx.set_options(0) & SSL.OP_CIPHER_SERVER_PREFERENCE  # adds nothing, returns the options
        tls12 = [suite for suite in _suites(ctx) if not suite.startswith("TLS_")]
        assert tls12 == DEFAULT_CIPHERS.split(":")
        assert all(s.startswith("ECDHE-") and ("GCM" in s or "CHACHA20" in s) for s in tls12)


@pytest.mark.parametrize(
    ("cipher", "culprit", "why"),
    [
        ("ALL:eNULL:@SECLEVEL=0", "@SECLEVEL=0", "below OpenSSL's default"),
        ("DEFAULT:@SECLEVEL=1", "@SECLEVEL=1", "below OpenSSL's default"),
        ("eNULL", "NULL", "does not encrypt"),
        ("ECDHE-ECDSA-NULL-SHA", "NULL", "does not encrypt"),
        ("aNULL", "ADH", "authenticates nobody"),
        ("HIGH", "ADH", "!aNULL"),  # OpenSSL's HIGH holds the anonymous suites
        ("DES-CBC3-SHA", "DES-CBC3-SHA", "Sweet32"),
        ("DES-CBC-SHA", "DES-CBC-SHA", "56-bit"),
    ],
)
def test_a_cipher_list_is_judged_by_the_suites_it_allows(certs: Any, cipher: str, culprit: str, why: str) -> None:
    with pytest.raises(FlagError) as info:
        build_context(parse_flags(f"-cert {certs.server} -cipher '{cipher}'", env={}), server=True)
    assert culprit in str(info.value) and why in str(info.value)


def test_a_cipher_list_without_the_refused_kinds_is_taken(certs: Any) -> None:
    ctx = build_context(parse_flags(f"-cert {certs.server} -cipher 'HIGH:!aNULL'", env={}), server=True)
    assert "ECDHE-ECDSA-AES256-GCM-SHA384" in _suites(ctx)


@pytest.mark.parametrize("flag", ["-groups", "-curves"])
def test_groups_are_checked_when_read(certs: Any, flag: str) -> None:
    build_context(parse_flags(f"-cert {certs.server} {flag} X25519:P-256", env={}), server=True)
    with pytest.raises(FlagError, match="'nope'") as info:
        build_context(parse_flags(f"-cert {certs.server} {flag} X25519:nope", env={}), server=True)
    assert info.value.reason == ("groups", "nope")


def test_the_timeout_bound_is_said(certs: Any) -> None:
    assert parse_flags("-timeout 86400", env={}).timeout == 86400
    with pytest.raises(FlagError, match="at most 86400"):
        parse_flags("-timeout 100000", env={})


def test_parsed_flags_are_remembered_per_string_and_environment() -> None:
    first = parse_flags("-verify 1 -depth 3", env={})
    assert parse_flags("-verify 1 -depth 3", env={}) is first  # a server accepting in a loop parses once
    other = parse_flags("-verify 1 -depth 3", env={"SSL_CERT_FILE": "ca.pem"})
    assert other is not first and other.cafile == "ca.pem" and first.cafile is None
    for _ in range(2):  # a bad string is not remembered: it fails every time
        with pytest.raises(FlagError, match="-verfy"):
            parse_flags("-verfy 1", env={})
