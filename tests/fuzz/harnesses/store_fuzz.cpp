// store_fuzz.cpp: the rendezvous store's protocol (engine/comm/rendezvous.cpp) as an intruder
// or a confused rank speaks it. One store runs in this process for the whole fuzzing session
// (with short timeouts); each input is sent over its own loopback connection - after the
// job's secret when the input's first byte is odd, raw otherwise - and the connection is
// closed. The store must survive every input (no crash, no sanitizer report) and still answer a
// legitimate client: a rank that sets a fresh key and reads it back, every 64 inputs.
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <string>

#include "engine/comm/rendezvous.h"

namespace {

const char* kSecret = "fuzz-secret-0123456789abcdef";

loom::KvServer& store() {
  static loom::StoreLimits limits{.auth_timeout_s = 0.2, .message_timeout_s = 0.2, .max_pending = 8,
                                  .spare_authed = 4};
  static loom::KvServer server("127.0.0.1", 0, 2, kSecret, limits);
  return server;
}

void put_u32(std::string& s, size_t n) {
  for (int i = 0; i < 4; ++i) s += static_cast<char>((n >> (8 * i)) & 0xff);
}

void send_all(int fd, const std::string& s) {
  size_t at = 0;
  while (at < s.size()) {
    const ssize_t r = ::send(fd, s.data() + at, s.size() - at, MSG_NOSIGNAL);
    if (r <= 0) return;  // the store may close a bad connection at any time
    at += static_cast<size_t>(r);
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  loom::KvServer& s = store();
  const int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  sockaddr_in sa{};
  sa.sin_family = AF_INET;
  sa.sin_port = htons(static_cast<uint16_t>(s.port()));
  sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (fd >= 0 && ::connect(fd, reinterpret_cast<sockaddr*>(&sa), sizeof sa) == 0) {
    std::string out;
    if (size > 0 && (data[0] & 1)) {  // authenticated first: the messages after the secret
      out += 'A';
      put_u32(out, 0);
      put_u32(out, std::string(kSecret).size());
      out += kSecret;
    }
    out.append(reinterpret_cast<const char*>(data), size);
    send_all(fd, out);
    // Read what the store answers without waiting for a blocking GET.
    timeval tv{0, 2000};
    ::setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    char buf[4096];
    while (::recv(fd, buf, sizeof buf, 0) > 0) {
    }
  }
  if (fd >= 0) ::close(fd);
  // The store still serves the job.
  static uint64_t n = 0;
  if (++n % 64 == 0) {
    loom::KvClient client("127.0.0.1", s.port(), 1, 5.0, kSecret);
    const std::string key = "fuzz/probe/" + std::to_string(n);
    client.set(key, "alive");
    if (client.get(key, 5.0) != "alive") {
      std::fprintf(stderr, "store_fuzz: the store stopped answering\n");
      std::abort();
    }
  }
  return 0;
}
