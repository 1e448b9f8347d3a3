#!/usr/bin/env escript
%% An Erlang/OTP ssl echo server, for sslsocket's interop tests.
%%
%% Usage: echo_server.escript Packet CertFile KeyFile [verify CaFile]
%%   Packet is 0 (raw), 1, 2, 4 or asn1: the {packet, _} option of the listen socket.
%%   With "verify CaFile" it requires a client certificate signed by that CA.
%%
%% It listens on 127.0.0.1, port chosen by the kernel, and prints "port N" once listening. Each connection gets
%% its own process, which sends back every packet it receives, framed the same way; a packet "close" makes it
%% close the connection in an orderly way (close_notify) instead.
-mode(compile).

main([Packet, Cert, Key | Verify]) ->
    {ok, _} = application:ensure_all_started(ssl),
    Options = [binary, {packet, packet(Packet)}, {active, false}, {reuseaddr, true}, {ip, {127, 0, 0, 1}},
               {certfile, Cert}, {keyfile, Key}, {versions, ['tlsv1.3', 'tlsv1.2']} | verify(Verify)],
    {ok, Listen} = ssl:listen(0, Options),
    {ok, {_, Port}} = ssl:sockname(Listen),
    io:format("port ~p~n", [Port]),
    accept_loop(Listen).

packet("asn1") -> asn1;
packet(N) -> list_to_integer(N).

verify([]) -> [{verify, verify_none}];
verify(["verify", CaFile]) -> [{verify, verify_peer}, {fail_if_no_peer_cert, true}, {cacertfile, CaFile}].

accept_loop(Listen) ->
    {ok, Transport} = ssl:transport_accept(Listen),
    Pid = spawn(fun() -> receive go -> handshake(Transport) end end),
    ok = ssl:controlling_process(Transport, Pid),
    Pid ! go,
    accept_loop(Listen).

handshake(Transport) ->
    case ssl:handshake(Transport, 10000) of
        {ok, Socket} -> echo(Socket);
        {error, Reason} -> io:format("handshake_error ~p~n", [Reason])
    end.

echo(Socket) ->
    case ssl:recv(Socket, 0) of
        {ok, <<"close">>} -> ssl:close(Socket), io:format("closed_by_me~n");
        {ok, Data} -> ok = ssl:send(Socket, Data), echo(Socket);
        {error, closed} -> io:format("closed~n");
        {error, Reason} -> io:format("error ~p~n", [Reason])
    end.
