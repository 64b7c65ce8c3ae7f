"""What the pool server reports about itself (`Op.STATS`, `juliapool status`): the pool's own keys
(as `JuliaProcessPool.get_stats` has them) and the server's workers, sessions and clients."""

from __future__ import annotations

import os
import time
from typing import TYPE_CHECKING, Dict

if TYPE_CHECKING:
    from .server import PoolServer


def server_stats(server: "PoolServer") -> Dict[str, object]:
    stock, now = server.stock, time.monotonic()
    lent = {lease.worker: ("session " + lease.key if lease.key else "lent") + f" to pid {c.pid}"
            for c in server.clients.values() for lease in c.leases.values()}
    lent.update({e.worker: f"session {e.key} (detached)" for e in server.sessions.values()
                 if e.worker is not None and e.lease is None})
    return {
        "size": stock.spares, "max_workers": stock.max_workers, "workers": len(stock.workers),
        "idle": len(stock.idle), "busy": len(stock.workers) - len(stock.idle), "starting": len(stock.starting),
        "sessions": len(server.sessions), "clients": len(server.clients),
        **server.counts, **stock.counts, "closed": False,
        "pid": os.getpid(), "socket": str(server.path), "uptime_s": round(time.time() - server.started_at, 1),
        "worker_list": stock.describe(lent),
        "session_list": [{"key": e.key, "worker_pid": e.worker.pid if e.worker else None,
                          "attached_to": e.lease.client.pid if e.lease else None, "keep": e.keep,
                          "idle_s": round(now - e.used, 1) if e.lease is None else 0.0}
                         for e in server.sessions.values()],
        "client_list": [{"pid": c.pid, "leases": len(c.leases), "connected_s": round(now - c.since, 1)}
                        for c in server.clients.values()],
    }


def format_status(stats: Dict[str, object]) -> str:
    """`juliapool status` in words: a summary, then one line per worker, session and client."""
    lines = [f"juliapool server pid {stats['pid']} on {stats['socket']}, up {stats['uptime_s']} s",
             f"workers: {stats['workers']} live ({stats['idle']} idle, {stats['busy']} lent or held), "
             f"{stats['starting']} starting; keeps {stats['size']} idle, at most {stats['max_workers']}",
             f"calls {stats['calls']}, errors {stats['errors']}, timeouts {stats['timeouts']}, "
             f"workers started {stats['started']}, restarts {stats['restarts']}, "
             f"killed mid-call {stats['killed_mid_call']}, clients gone {stats['clients_gone']}", ""]
    lines.append("WORKER               PID       STATE                                   RSS MB  CALLS")
    for w in stats["worker_list"]:  # type: ignore[union-attr]
        lines.append(f"{w['name']:<20} {str(w['pid']):<9} {w['state']:<39} {w['rss_mb']:>6}  {w['calls']:>5}")
    lines += ["", f"SESSIONS ({stats['sessions']})"]
    for e in stats["session_list"]:  # type: ignore[union-attr]
        where = f"attached to pid {e['attached_to']}" if e["attached_to"] else f"detached, idle {e['idle_s']} s"
        lines.append(f"  {e['key']}: worker pid {e['worker_pid']}, {where}")
    lines += ["", f"CLIENTS ({stats['clients']})"]
    for c in stats["client_list"]:  # type: ignore[union-attr]
        lines.append(f"  pid {c['pid']}: {c['leases']} lease(s), connected {c['connected_s']} s")
    return "\n".join(lines)
