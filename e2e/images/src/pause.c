/*
 * /pause for the test bed's registry.k8s.io/pause images.
 *
 * Behaves like upstream's pause (kubernetes/build/pause/linux/pause.c): it
 * sleeps until a signal arrives, reaps every child it inherits (it is the
 * init of a shared PID namespace), exits 0 on SIGINT or SIGTERM, and prints
 * its version for -v. PAUSE_VERSION is set at build time; each pause tag gets
 * its own version string, so each tag is a distinct image.
 */
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <unistd.h>

#ifndef PAUSE_VERSION
#define PAUSE_VERSION "unknown"
#endif

static void on_shutdown(int sig)
{
	static const char msg[] = "Shutting down, got signal\n";
	(void)sig;
	if (write(STDERR_FILENO, msg, sizeof msg - 1) < 0) {
		/* nothing useful to do: we are exiting anyway */
	}
	_exit(0);
}

static void on_child(int sig)
{
	int saved = errno;
	(void)sig;
	while (waitpid(-1, NULL, WNOHANG) > 0) {
	}
	errno = saved;
}

int main(int argc, char **argv)
{
	struct sigaction sa;
	int i;

	for (i = 1; i < argc; i++) {
		if (strcmp(argv[i], "-v") == 0) {
			printf("pause.c %s (gantry test bed)\n", PAUSE_VERSION);
			return 0;
		}
	}
	if (getpid() != 1) {
		fprintf(stderr, "Warning: pause should be the first process\n");
	}

	memset(&sa, 0, sizeof sa);
	sigemptyset(&sa.sa_mask);
	sa.sa_handler = on_shutdown;
	if (sigaction(SIGINT, &sa, NULL) < 0 || sigaction(SIGTERM, &sa, NULL) < 0) {
		perror("sigaction");
		return 1;
	}
	sa.sa_handler = on_child;
	sa.sa_flags = SA_NOCLDSTOP | SA_RESTART;
	if (sigaction(SIGCHLD, &sa, NULL) < 0) {
		perror("sigaction");
		return 2;
	}

	for (;;) {
		pause();
	}
	/* not reached */
	return 42;
}
