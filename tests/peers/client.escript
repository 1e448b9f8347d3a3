#!/usr/bin/env escript
%% An Erlang/OTP ssl client, for sslsocket's interop tests.
%%
%% Usage: client.escript Port Packet [cert CertFile KeyFile] [cacert CaFile]
%%   Packet is 0 (raw), 1, 2, 4 or asn1, as the {packet, _} option.
%%
%% It reads packets from standard input, one line each: "p" and the packet in hexadecimal ("p" alone is an empty
%% packet), until the end of input; sends them all; then
%% reads the replies and prints "got Length Sha256" for each (in raw mode, one line for all the bytes that came
%% back), closes in an orderly way, and prints "done".
-mode(compile).

main([Port, Packet | Rest]) ->
    {ok, _} = application:ensure_all_started(ssl),
    Mode = packet(Packet),
    Options = [binary, {packet, Mode}, {active, false}, {versions, ['tlsv1.3', 'tlsv1.2']} | options(Rest)],
    case ssl:connect({127, 0, 0, 1}, list_to_integer(Port), Options, 10000) of
        {ok, Socket} ->
            Packets = read_packets([]),
            [ok = ssl:send(Socket, P) || P <- Packets],
            replies(Socket, Mode, Packets),
            ok = ssl:close(Socket),
            io:format("done~n");
        {error, Reason} ->
            io:format("connect_error ~p~n", [Reason])
    end.

packet("asn1") -> asn1;
packet(N) -> list_to_integer(N).

options(["cert", Cert, Key | Rest]) -> [{certfile, Cert}, {keyfile, Key} | options(Rest)];
options(["cacert", CaFile | Rest]) -> [{verify, verify_peer}, {cacertfile, CaFile},
                                       {server_name_indication, "localhost"} | options(Rest)];
options([]) -> [{verify, verify_none}].

read_packets(Acc) ->
    case io:get_line("") of
        eof -> lists:reverse(Acc);
        "p" ++ Hex -> read_packets([binary:decode_hex(list_to_binary(string:trim(Hex))) | Acc])
    end.

replies(Socket, 0, Packets) ->
    Total = iolist_size(Packets),
    report(recv_raw(Socket, Total, []));
replies(Socket, _, Packets) ->
    [begin {ok, Data} = ssl:recv(Socket, 0, 10000), report(Data) end || _ <- Packets].

recv_raw(_, 0, Acc) -> iolist_to_binary(lists:reverse(Acc));
recv_raw(Socket, Left, Acc) ->
    {ok, Data} = ssl:recv(Socket, 0, 10000),
    recv_raw(Socket, Left - byte_size(Data), [Data | Acc]).

report(Data) ->
    io:format("got ~p ~s~n", [byte_size(Data), binary:encode_hex(crypto:hash(sha256, Data))]).
