%% macula_gossip: what Macula's macula_cluster_gossip does, for the Erlang interop tests of
%% package cluster and the macula command (embedded by internal/erltest). It joins the gossip
%% group (on lo, or on GOSSIP_IF), sends MACULA_GOSSIP:<node()> every GOSSIP_INTERVAL_MS, calls
%% net_kernel:connect_node/1 on every node it hears that is not connected (as Macula does, also
%% for Go nodes' name@host:port fields, which fail), monitors nodes and prints one line per
%% event on stdout, with erlang:system_time(microsecond):
%%
%%   ready <node>
%%   heard <node> <us>        first heartbeat of a node field
%%   nodeup <node> <us>
%%   nodedown <node> <us>
%%
%% It also answers {echo, From, X} with {echo, node(), X}, and on stdin "nodes", "send <node>"
%% (sends {hello, node()} to {gobox, Node}), "call <node>" (gen_server:call({gobox, Node}, ping)
%% and prints "call <result>") and "stop".
%%
%% Network safety: multicast goes out on the interface with the address GOSSIP_IF only
%% (127.0.0.1 when unset: lo, TTL 0; any other address is one inside a test's network
%% namespace: TTL 1) and the membership is on that interface; erltest runs it with an inetrc of
%% {lookup, [file]} so that host names such as "127.0.0.1:9100" are never asked of a DNS server.
-module(macula_gossip).
-export([start/0]).

-define(GROUP, {230, 1, 1, 251}).

start() ->
    Port = list_to_integer(os:getenv("GOSSIP_PORT")),
    Interval = list_to_integer(os:getenv("GOSSIP_INTERVAL_MS")),
    {ok, If} = inet:parse_ipv4_address(os:getenv("GOSSIP_IF", "127.0.0.1")),
    TTL = case If of {127, _, _, _} -> 0; _ -> 1 end,
    ok = net_kernel:monitor_nodes(true),
    register(macula_gossip, self()),
    {ok, S} = gen_udp:open(Port, [binary, {active, true}, {reuseaddr, true},
                                  {add_membership, {?GROUP, If}},
                                  {multicast_if, If},
                                  {multicast_ttl, TTL}, {multicast_loop, true}]),
    Self = self(),
    spawn_link(fun() -> stdin(Self) end),
    out("ready ~s", [node()]),
    Self ! beat,
    loop(#{sock => S, port => Port, interval => Interval, heard => #{}}).

out(Fmt, Args) -> io:format(user, Fmt ++ "~n", Args).

now_us() -> erlang:system_time(microsecond).

stdin(Parent) ->
    case io:get_line(user, "") of
        eof -> init:stop();
        {error, _} -> init:stop();
        Line -> Parent ! {stdin, string:trim(Line)}, stdin(Parent)
    end.

loop(St = #{sock := S, port := Port, interval := Interval, heard := Heard}) ->
    receive
        beat ->
            ok = gen_udp:send(S, ?GROUP, Port, ["MACULA_GOSSIP:", atom_to_list(node())]),
            erlang:send_after(Interval, self(), beat),
            loop(St);
        {udp, S, _IP, _P, <<"MACULA_GOSSIP:", Rest/binary>>} ->
            [Field | _] = binary:split(Rest, <<"|">>),
            Node = binary_to_atom(Field, utf8),
            Heard1 = case maps:is_key(Node, Heard) of
                         true -> Heard;
                         false when Node =:= node() -> Heard#{Node => true};
                         false -> out("heard ~s ~b", [Node, now_us()]), Heard#{Node => true}
                     end,
            case Node =/= node() andalso not lists:member(Node, nodes()) of
                true -> spawn(fun() -> net_kernel:connect_node(Node) end);
                false -> ok
            end,
            loop(St#{heard := Heard1});
        {udp, S, _, _, _} -> loop(St);
        {nodeup, N} -> out("nodeup ~s ~b", [N, now_us()]), loop(St);
        {nodedown, N} -> out("nodedown ~s ~b", [N, now_us()]), loop(St);
        {stdin, "nodes"} -> out("nodes ~p", [nodes()]), loop(St);
        {stdin, "send " ++ Node} ->
            {gobox, list_to_atom(Node)} ! {hello, node()},
            out("sent", []), loop(St);
        {stdin, "call " ++ Node} ->
            Self = self(),
            spawn(fun() -> Self ! {call_result, catch gen_server:call({gobox, list_to_atom(Node)}, ping, 5000)} end),
            loop(St);
        {call_result, R} -> out("call ~p", [R]), loop(St);
        {stdin, "stop"} -> init:stop();
        {stdin, Other} -> out("unknown ~s", [Other]), loop(St);
        {echo, From, X} -> From ! {echo, node(), X}, loop(St);
        Other -> out("unexpected ~p", [Other]), loop(St)
    end.
