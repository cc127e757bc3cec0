/* smtpload_idle.c: idle mode (--idle N).
 *
 * Opens N TLS sessions, --conns at a time, on one epoll worker of smtpload_conn.c, holds
 * them for --idle-secs, samples the server tree's memory before and while they are held,
 * sends QUIT to all, and reports the memory and CPU per session. */
#include "smtpload.h"

#include <math.h>
#include <stdio.h>
#include <sys/epoll.h>

int run_idle(void)
{
	g_idle_mode = true;
	struct worker *w = make_workers(1, o.idle);
	if (!w) {
		fprintf(stderr, "smtpload: out of memory\n");
		return 2;
	}
	srv_settle(o.settle);
	struct srvsample m0, m1;
	srv_sample(&m0, true);
	g_t0 = now();
	double setup_end = g_t0 + o.duration, last_scan = 0;
	int next = 0;
	while (w->ready + w->setup_failed < w->n && now() < setup_end) {
		while (w->opening < o.conns && next < w->n) {
			struct conn *c = &w->c[next++];
			w->opening++;
			conn_open(c);
		}
		worker_poll(w, 20);
		double t = now();
		if (t - last_scan >= 0.05) {
			last_scan = t;
			scan_timeouts(w, t);
		}
	}
	double t_ready = now();
	for (int i = 0; i < w->n; i++) { /* setup bound reached: drop the stragglers */
		struct conn *c = &w->c[i];
		if (c->fd >= 0 && c->step != S_IDLE)
			conn_fail(c, E_DEADLINE, "setup not finished within --duration (%s)",
			          step_name[c->step]);
	}
	int never = w->n - next;
	double hold_end = now() + o.idle_secs;
	while (now() < hold_end) {
		double left = (hold_end - now()) * 1000;
		worker_poll(w, left > 100 ? 100 : (int)left + 1);
	}
	srv_sample(&m1, true);
	int held = 0;
	for (int i = 0; i < w->n; i++)
		if (w->c[i].fd >= 0 && w->c[i].step == S_IDLE)
			held++;
	double t_hold = now();
	for (int i = 0; i < w->n; i++) {
		struct conn *c = &w->c[i];
		if (c->fd < 0)
			continue;
		send_quit(c);
		want(c, EPOLLIN | EPOLLOUT);
	}
	double quit_end = now() + quit_timeout();
	for (;;) {
		int open_n = 0;
		for (int i = 0; i < w->n; i++)
			open_n += w->c[i].fd >= 0;
		if (!open_n || now() >= quit_end)
			break;
		worker_poll(w, 50);
	}
	for (int i = 0; i < w->n; i++)
		if (w->c[i].fd >= 0)
			conn_close(&w->c[i]);
	srv_settle(o.settle);

	double setup_s = t_ready - g_t0;
	double rss_per = NAN, pss_per = NAN, cpu_ms = NAN, cpu_per = NAN;
	if (m0.ok && m1.ok) {
		if (held > 0) {
			rss_per = (double)(m1.rss_kib - m0.rss_kib) / held;
			pss_per = (double)(m1.pss_kib - m0.pss_kib) / held;
		}
		cpu_ms = ticks_ms(m1.ticks - m0.ticks);
		if (w->ready > 0)
			cpu_per = cpu_ms / w->ready;
	}
	if (o.json) {
		json_begin("idle");
		printf(",\"tls_mode\":\"%s\",\"sessions_target\":%d,"
		       "\"sessions_ready\":%d,\"sessions_failed\":%d,\"sessions_not_started\":%d,"
		       "\"sessions_dropped\":%d,\"sessions_held\":%d",
		       tls_mode(), w->n, w->ready, w->setup_failed, never, w->dropped,
		       held);
		jnum("setup_s", setup_s, 3);
		jnum("hold_s", t_hold - t_ready, 3);
		printf(",\"tls\":");
		jstr(g_tlsinfo);
		printf(",\"server_procs_before\":%d,\"server_procs_held\":%d", m0.nproc, m1.nproc);
		jnum("server_rss_before_kib", m0.ok ? (double)m0.rss_kib : NAN, 0);
		jnum("server_rss_held_kib", m1.ok ? (double)m1.rss_kib : NAN, 0);
		jnum("server_rss_per_session_kib", rss_per, 1);
		jnum("server_pss_before_kib", m0.ok ? (double)m0.pss_kib : NAN, 0);
		jnum("server_pss_held_kib", m1.ok ? (double)m1.pss_kib : NAN, 0);
		jnum("server_pss_per_session_kib", pss_per, 1);
		jnum("server_cpu_ms", cpu_ms, 0);
		jnum("server_cpu_ms_per_session", cpu_per, 3);
		json_errors();
		printf("}\n");
	} else {
		printf("smtpload idle %s:%d %s: %d sessions, %d at a time, hold %.0f s\n", o.host,
		       o.port, tls_mode(), w->n, o.conns, o.idle_secs);
		printf("  sessions    ready %d  failed %d  not started %d  dropped while held %d  "
		       "held at the end %d  (setup %.2f s%s%s)\n",
		       w->ready, w->setup_failed, never, w->dropped, held, setup_s,
		       g_tlsinfo[0] ? ", " : "", g_tlsinfo);
		if (m0.ok && m1.ok) {
			printf(
			    "  server RSS  before %lld KiB (%d procs), held %lld KiB (%d procs): "
			    "%.1f KiB/session\n",
			    m0.rss_kib, m0.nproc, m1.rss_kib, m1.nproc, rss_per);
			printf("  server PSS  before %lld KiB, held %lld KiB: %.1f KiB/session\n",
			       m0.pss_kib, m1.pss_kib, pss_per);
			printf("  server CPU  %.0f ms = %.3f ms/session (setup and hold)\n", cpu_ms,
			       cpu_per);
		}
		text_errors();
	}
	return w->ready == w->n && w->dropped == 0 ? 0 : 1;
}
