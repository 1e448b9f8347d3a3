#!/usr/bin/env escript
%% Erlang/OTP ssl with {packet, 4}: the optional third column of benchmarks/run.py.
%%
%% Usage: erlang_bench.escript pingpong|stream Count Size CertFile KeyFile
%%
%% A server and a client in one node, as sslsocket's figures are in one process, TLS 1.3 only. Prints the rate:
%% round trips per second (pingpong), or packets per second, one way, until the server has them all (stream).
-mode(compile).

main([Kind, CountText, SizeText, Cert, Key]) ->
    {ok, _} = application:ensure_all_started(ssl),
    Count = list_to_integer(CountText),
    Options = [binary, {packet, 4}, {active, false}, {versions, ['tlsv1.3']}],
    {ok, Listen} = ssl:listen(0, [{reuseaddr, true}, {ip, {127, 0, 0, 1}}, {certfile, Cert}, {keyfile, Key} | Options]),
    {ok, {_, Port}} = ssl:sockname(Listen),
    Parent = self(),
    spawn_link(fun() -> server(Listen, Kind, Count, Parent) end),
    {ok, Socket} = ssl:connect({127, 0, 0, 1}, Port, [{verify, verify_none} | Options]),
    Payload = binary:copy(<<"x">>, list_to_integer(SizeText)),
    Start = erlang:monotonic_time(microsecond),
    run(Kind, Socket, Payload, Count),
    Elapsed = erlang:monotonic_time(microsecond) - Start,
    io:format("~.1f~n", [Count * 1000000 / Elapsed]).

server(Listen, Kind, Count, Parent) ->
    {ok, Transport} = ssl:transport_accept(Listen),
    {ok, Socket} = ssl:handshake(Transport),
    serve(Kind, Socket, Count),
    Parent ! done.

serve(_, _, 0) -> ok;
serve("pingpong", Socket, N) ->
    {ok, Data} = ssl:recv(Socket, 0),
    ok = ssl:send(Socket, Data),
    serve("pingpong", Socket, N - 1);
serve("stream", Socket, N) ->
    {ok, _} = ssl:recv(Socket, 0),
    serve("stream", Socket, N - 1).

run("pingpong", Socket, Payload, Count) ->
    [begin ok = ssl:send(Socket, Payload), {ok, _} = ssl:recv(Socket, 0) end || _ <- lists:seq(1, Count)];
run("stream", Socket, Payload, Count) ->
    [ok = ssl:send(Socket, Payload) || _ <- lists:seq(1, Count)],
    receive done -> ok end.
