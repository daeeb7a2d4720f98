/* Preloaded into a successor by tests/systemd/fake-successor ("die-promoted"): the successor is
 * killed (SIGKILL) at its first renameat(2), which is where it renames its PID file into place —
 * after it was promoted and sent READY=1 as the main process, before it confirms the promotion to
 * its predecessor. Built by tests/systemd/run with the host's C compiler. */
#include <signal.h>
#include <unistd.h>

int renameat(int olddirfd, const char *oldpath, int newdirfd, const char *newpath)
{
    (void)olddirfd;
    (void)oldpath;
    (void)newdirfd;
    (void)newpath;
    kill(getpid(), SIGKILL);
    return -1;
}
