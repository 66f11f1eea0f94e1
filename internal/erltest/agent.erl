%% agent: the Erlang side of the erldist interop tests. It registers as `agent`, reports
%% nodeup/nodedown on stdout, runs commands it receives as messages or reads on stdin.
-module(agent).
-export([start/0]).

start() ->
    ok = net_kernel:monitor_nodes(true),
    register(agent, self()),
    Self = self(),
    spawn_link(fun() -> stdin(Self) end),
    out("ready ~s ~p", [node(), self()]),
    case os:getenv("AGENT_CONNECT") of
        false -> ok;
        "" -> ok;
        Peer -> out("ping ~p", [net_adm:ping(list_to_atom(Peer))])
    end,
    loop().

out(Fmt, Args) -> io:format(user, Fmt ++ "~n", Args).

stdin(Agent) ->
    case io:get_line(user, "") of
        eof -> init:stop();
        {error, _} -> init:stop();
        Line -> Agent ! {stdin, string:trim(Line)}, stdin(Agent)
    end.

wait_until(At) ->
    case At - erlang:system_time(microsecond) of
        D when D > 2000 -> timer:sleep(D div 1000 - 1), wait_until(At);
        D when D > 0 -> wait_until(At); % the last 2 ms: spin
        _ -> ok
    end.

loop() ->
    receive
        {nodeup, N} -> out("nodeup ~s", [N]);
        {nodedown, N} -> out("nodedown ~s", [N]);
        {stdin, "connect " ++ Node} ->
            out("connect ~p", [net_kernel:connect_node(list_to_atom(Node))]);
        {stdin, "connect_at " ++ Args} ->
            % connect_at <node> <unix us>: connect at that moment of the system clock (the
            % test connects from the other side at the same moment).
            [Node, At] = string:split(Args, " "),
            wait_until(list_to_integer(At)),
            out("connect ~p", [net_kernel:connect_node(list_to_atom(Node))]);
        {stdin, "disconnect " ++ Node} ->
            out("disconnect ~p", [erlang:disconnect_node(list_to_atom(Node))]);
        {stdin, "ping " ++ Node} ->
            out("ping ~p", [net_adm:ping(list_to_atom(Node))]);
        {stdin, "nodes"} -> out("nodes ~p", [nodes()]);
        {stdin, "hidden"} -> out("hidden ~p", [nodes(hidden)]);
        {stdin, "global_sync"} -> out("global_sync ~p", [global:sync()]);
        {stdin, "stop"} -> init:stop();
        {stdin, Other} -> out("unknown ~s", [Other]);
        {echo, From, X} -> From ! X;
        {send_to, Dest, Msg} -> Dest ! Msg;
        {ping, Node, From} -> From ! {pong, net_adm:ping(Node)};
        {call, Dest, Req, From} -> From ! {call_result, catch gen_server:call(Dest, Req, 5000)};
        {link_to, Pid, From} -> link(Pid), From ! linked;
        {monitor, Dest, From} ->
            Ref = erlang:monitor(process, Dest),
            From ! {monitoring, Ref},
            receive {'DOWN', Ref, _, _, Reason} -> From ! {down, Reason} after 10000 -> ok end;
        {term_to_binary, From, X} -> From ! {ttb, term_to_binary(X)};
        {binary_to_term, From, B} -> From ! {btt, binary_to_term(B)};
        {nodes, From} -> From ! {nodes, nodes()};
        Other -> out("unexpected ~p", [Other])
    end,
    loop().
