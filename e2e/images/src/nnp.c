/*
 * nnp for e2e-test-images/nonewprivs: installed setuid root, it prints the
 * effective UID it runs with, like upstream's test/images/nonewprivs/nnp.go.
 * With no_new_privs the setuid bit is ignored and it prints the caller's UID.
 */
#include <stdio.h>
#include <unistd.h>

int main(void)
{
	printf("Effective uid: %d\n", (int)geteuid());
	return 0;
}
