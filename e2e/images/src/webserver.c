/*
 * A stand-in for nginx and Apache httpd in the test bed's images, built from
 * busybox: a small "master" process that runs `busybox httpd` as its worker.
 *
 * It keeps the traits the CRI validation specs (cri-tools critest) look at:
 *   - the master writes its PID to the server's pid file
 *     (nginx: /var/run/nginx.pid, read by the HostPID spec);
 *   - its process name is the server's name (`pidof nginx` finds it);
 *   - nginx flavour: like real nginx, the master's command line reads
 *     "nginx: master process nginx -g daemon off;" (the ContainerPID spec
 *     greps /proc/1/cmdline for "master process");
 *   - it serves HTTP 200 for / on the port of the first `listen` (nginx) or
 *     `Listen` (httpd) line of its config file, 80 if there is none;
 *   - as PID 1 it reaps orphans and stops cleanly on SIGTERM, SIGINT, SIGQUIT
 *     (nginx's graceful stop) and SIGWINCH (httpd's graceful stop).
 *
 * Build flavours with -DWS_NGINX or -DWS_HTTPD; see e2e/images/build.sh.
 */
#include <ctype.h>
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <unistd.h>

#if defined(WS_NGINX)
#define WS_NAME "nginx"
#define WS_SELF "/usr/sbin/nginx"
#define WS_CONF "/etc/nginx/conf.d/default.conf"
#define WS_DOCROOT "/usr/share/nginx/html"
#define WS_PIDFILE "/var/run/nginx.pid"
#define WS_VERSION "nginx/1.14.2"
#define WS_TITLE_PREFIX "nginx: master process"
#elif defined(WS_HTTPD)
#define WS_NAME "httpd"
#define WS_SELF "/usr/local/apache2/bin/httpd"
#define WS_CONF "/usr/local/apache2/conf/httpd.conf"
#define WS_DOCROOT "/usr/local/apache2/htdocs"
#define WS_PIDFILE "/usr/local/apache2/logs/httpd.pid"
#define WS_VERSION "Apache/2.4.39 (Unix)"
#else
#error "define WS_NGINX or WS_HTTPD"
#endif

#define BUSYBOX "/bin/busybox"

static volatile sig_atomic_t stopping;
static volatile pid_t worker;

static void on_stop(int sig)
{
	(void)sig;
	stopping = 1;
	if (worker > 0) {
		kill(worker, SIGTERM);
	}
}

static void on_ignore(int sig)
{
	(void)sig; /* SIGHUP (reload): nothing to reload */
}

/* The port of the first "listen N" line of the config file, or 80. */
static int config_port(void)
{
	char line[512];
	int port = 80;
	FILE *f = fopen(WS_CONF, "r");

	if (f == NULL) {
		return port;
	}
	while (fgets(line, sizeof line, f) != NULL) {
		char *p = line;
		while (isspace((unsigned char)*p)) {
			p++;
		}
		if (strncasecmp(p, "listen", 6) == 0 && isspace((unsigned char)p[6])) {
			int n = atoi(p + 7);
			if (n > 0 && n < 65536) {
				port = n;
			}
			break;
		}
	}
	fclose(f);
	return port;
}

static void write_pidfile(void)
{
	FILE *f = fopen(WS_PIDFILE, "w");

	if (f == NULL) {
		fprintf(stderr, WS_NAME ": cannot write " WS_PIDFILE ": %s\n", strerror(errno));
		return;
	}
	fprintf(f, "%d\n", (int)getpid());
	fclose(f);
}

#ifdef WS_TITLE_PREFIX
/*
 * Real nginx rewrites its argv so ps shows "nginx: master process <argv>".
 * Growing argv in place needs CAP_SYS_RESOURCE (prctl PR_SET_MM), so instead
 * re-execute ourselves once with that title as the only argument; the PID,
 * and so the pid namespace's PID 1, stay the same.
 */
static void retitle(int argc, char **argv)
{
	size_t len = sizeof WS_TITLE_PREFIX;
	char *title;
	int i;

	if (strncmp(argv[0], WS_TITLE_PREFIX, strlen(WS_TITLE_PREFIX)) == 0) {
		return; /* already retitled */
	}
	for (i = 0; i < argc; i++) {
		len += strlen(argv[i]) + 1;
	}
	title = malloc(len);
	if (title == NULL) {
		return;
	}
	strcpy(title, WS_TITLE_PREFIX);
	for (i = 0; i < argc; i++) {
		strcat(title, " ");
		strcat(title, argv[i]);
	}
	char *args[] = {title, NULL};
	execv(WS_SELF, args);
	execv("/proc/self/exe", args); /* not installed at WS_SELF: keep going */
	free(title);
}
#endif

int main(int argc, char **argv)
{
	struct sigaction sa;
	char port[16];
	int i;

	for (i = 1; i < argc; i++) {
		if (strcmp(argv[i], "-v") == 0 || strcmp(argv[i], "-V") == 0) {
			printf("%s version: %s (busybox httpd stand-in)\n", WS_NAME, WS_VERSION);
			return 0;
		}
		if (strcmp(argv[i], "-t") == 0) {
			printf("%s: configuration file %s test is successful\n", WS_NAME, WS_CONF);
			return 0;
		}
	}
#ifdef WS_TITLE_PREFIX
	retitle(argc, argv);
#endif

	memset(&sa, 0, sizeof sa);
	sigemptyset(&sa.sa_mask);
	sa.sa_handler = on_stop; /* no SA_RESTART: wait() returns EINTR */
	sigaction(SIGTERM, &sa, NULL);
	sigaction(SIGINT, &sa, NULL);
	sigaction(SIGQUIT, &sa, NULL);
	sigaction(SIGWINCH, &sa, NULL);
	sa.sa_handler = on_ignore;
	sigaction(SIGHUP, &sa, NULL);

	snprintf(port, sizeof port, "%d", config_port());
	write_pidfile();
	fprintf(stderr, "%s: %s master process %d serving %s on port %s\n", WS_NAME, WS_VERSION,
		(int)getpid(), WS_DOCROOT, port);

	pid_t pid = fork();
	if (pid < 0) {
		fprintf(stderr, WS_NAME ": fork: %s\n", strerror(errno));
		return 1;
	}
	if (pid == 0) {
		char *args[] = {"httpd", "-f", "-p", port, "-h", WS_DOCROOT, NULL};
		execv(BUSYBOX, args);
		fprintf(stderr, WS_NAME ": exec " BUSYBOX " httpd: %s\n", strerror(errno));
		_exit(127);
	}
	worker = pid;
	if (stopping) {
		kill(pid, SIGTERM);
	}

	for (;;) {
		int status;
		pid_t done = wait(&status);

		if (done < 0) {
			if (errno == EINTR) {
				continue;
			}
			break; /* ECHILD: cannot happen while the worker lives */
		}
		if (done != pid) {
			continue; /* an orphan we adopted as PID 1 */
		}
		unlink(WS_PIDFILE);
		if (stopping) {
			return 0;
		}
		fprintf(stderr, WS_NAME ": worker %d exited (status %d)\n", (int)pid, status);
		return 1;
	}
	unlink(WS_PIDFILE);
	return 1;
}
