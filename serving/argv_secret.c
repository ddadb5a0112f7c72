/* argv_secret: hand a secret to a program that takes it only as a command-line argument, without the secret ever
 * being in the argument memory that /proc/PID/cmdline shows to every local user.
 *
 * Preloaded into tritonserver (LD_PRELOAD) by inferline's serving/server.py. The command line carries a placeholder
 * (INFERLINE_SECRET_PLACEHOLDER below) where the secret belongs; the secret itself travels in the environment
 * variable INFERLINE_ARGV_SECRET (/proc/PID/environ is readable only by the process's owner). Before main() runs,
 * this constructor (glibc passes argc, argv and envp to .init_array functions):
 *
 *   1. copies the secret out of the environment, overwrites its bytes in the original environment block with '*'
 *      (so /proc/PID/environ no longer holds it either) and unsets it; it also unsets LD_PRELOAD, so the processes
 *      the program starts (Triton's Python-backend stubs) neither load this library nor see the secret;
 *   2. for each argument holding the placeholder, points argv[i] at a heap copy with the placeholder replaced by the
 *      secret. main() reads the real value through argv; /proc/PID/cmdline reads the original argument memory,
 *      which keeps the placeholder for the whole life of the process.
 *
 * Nothing is done when INFERLINE_ARGV_SECRET is absent. A failure (no memory) exits with status 97 and a message,
 * rather than starting the program with the placeholder in place of the secret.
 *
 * Build: gcc -shared -fPIC -O2 -o argv_secret.so argv_secret.c (serving/server.py does this on first use).
 * Linux with glibc only: other C libraries do not pass argv to constructors.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define SECRET_VARIABLE "INFERLINE_ARGV_SECRET"
#define INFERLINE_SECRET_PLACEHOLDER "@INFERLINE_ADMIN_KEY@"

static void fail(const char *what) {
    fprintf(stderr, "argv_secret: %s; the program is not started with its secret\n", what);
    _exit(97);
}

static char *replaced(const char *arg, const char *secret) {
    size_t placeholder = strlen(INFERLINE_SECRET_PLACEHOLDER), value = strlen(secret);
    size_t count = 0;
    for (const char *at = strstr(arg, INFERLINE_SECRET_PLACEHOLDER); at; at = strstr(at + placeholder,
                                                                                      INFERLINE_SECRET_PLACEHOLDER))
        count++;
    size_t size = strlen(arg) + count * value + 1; /* never shorter than the result */
    char *out = malloc(size), *to = out;
    if (!out) fail("out of memory");
    const char *from = arg;
    for (const char *at = strstr(from, INFERLINE_SECRET_PLACEHOLDER); at; at = strstr(from,
                                                                                      INFERLINE_SECRET_PLACEHOLDER)) {
        memcpy(to, from, (size_t)(at - from));
        to += at - from;
        memcpy(to, secret, value);
        to += value;
        from = at + placeholder;
    }
    strcpy(to, from);
    return out;
}

__attribute__((constructor)) static void argv_secret(int argc, char **argv, char **envp) {
    const char *found = getenv(SECRET_VARIABLE);
    if (!found) return;
    char *secret = strdup(found);
    if (!secret) fail("out of memory");
    size_t prefix = strlen(SECRET_VARIABLE "=");
    for (char **env = envp; env && *env; env++) /* the original block that /proc/PID/environ shows */
        if (strncmp(*env, SECRET_VARIABLE "=", prefix) == 0) memset(*env + prefix, '*', strlen(*env + prefix));
    unsetenv(SECRET_VARIABLE);
    unsetenv("LD_PRELOAD");
    int used = 0;
    for (int i = 0; i < argc; i++)
        if (strstr(argv[i], INFERLINE_SECRET_PLACEHOLDER)) {
            argv[i] = replaced(argv[i], secret);
            used = 1;
        }
    memset(secret, 0, strlen(secret));
    free(secret);
    if (!used) fail("no argument holds the placeholder " INFERLINE_SECRET_PLACEHOLDER);
}
