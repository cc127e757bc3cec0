/* Frames for the typed IPC between sealmail's processes (see ipc.h): encode, decode with
 * strict checks, and the UNIX socket plumbing. Every process. Input: frames from our own
 * processes, still checked as if hostile (length caps, version). */
#include "net/ipc.h"

#include <errno.h>
#include <fcntl.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include "limits.h"

int ipc_send(struct bufferevent *bev, uint16_t type, uint32_t id, const void *p, size_t n)
{
	struct ipc_hdr h = {.len = (uint32_t)n, .type = type, .version = IPC_VERSION, .id = id};
	if (n > LIM_IPC_FRAME)
		return -1;
	struct evbuffer *out = bufferevent_get_output(bev);
	evbuffer_add(out, &h, sizeof(h));
	if (n)
		evbuffer_add(out, p, n);
	return 0;
}

int ipc_read(struct evbuffer *in, struct ipc_hdr *h, char *buf, size_t cap)
{
	size_t have = evbuffer_get_length(in);
	if (have < sizeof(*h))
		return 0;
	evbuffer_copyout(in, h, sizeof(*h));
	if (h->version != IPC_VERSION || h->len > LIM_IPC_FRAME || h->len >= cap)
		return -1;
	if (have < sizeof(*h) + h->len)
		return 0;
	evbuffer_drain(in, sizeof(*h));
	evbuffer_remove(in, buf, h->len);
	buf[h->len] = '\0';
	return 1;
}

static int unix_addr(const char *path, struct sockaddr_un *sun)
{
	memset(sun, 0, sizeof(*sun));
	sun->sun_family = AF_UNIX;
	if (strlen(path) >= sizeof(sun->sun_path)) {
		errno = ENAMETOOLONG;
		return -1;
	}
	memcpy(sun->sun_path, path, strlen(path) + 1);
	return 0;
}

int ipc_listen_unix(const char *path)
{
	struct sockaddr_un sun;
	if (unix_addr(path, &sun) != 0)
		return -1;
	int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (fd < 0)
		return -1;
	unlink(path);
	mode_t old = umask(077);
	int rc = bind(fd, (struct sockaddr *)&sun, sizeof(sun));
	umask(old);
	if (rc != 0 || listen(fd, 128) != 0) {
		int e = errno;
		close(fd);
		errno = e;
		return -1;
	}
	return fd;
}

int ipc_connect_unix(const char *path)
{
	struct sockaddr_un sun;
	if (unix_addr(path, &sun) != 0)
		return -1;
	int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (fd < 0)
		return -1;
	if (connect(fd, (struct sockaddr *)&sun, sizeof(sun)) != 0) {
		int e = errno;
		close(fd);
		errno = e;
		return -1;
	}
	fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK);
	return fd;
}
