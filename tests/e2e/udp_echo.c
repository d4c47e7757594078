/* udp_echo.c - UDP echo server for the published UDP port check (busybox's nc has no -u).
 * Built static by run.sh and copied into a busybox container.  Usage: udp_echo PORT */
#include <netinet/in.h>
#include <stdlib.h>
#include <sys/socket.h>

int main(int argc, char **argv) {
  struct sockaddr_in address = {.sin_family = AF_INET, .sin_port = htons(argc > 1 ? atoi(argv[1]) : 9999)};
  int s = socket(AF_INET, SOCK_DGRAM, 0);
  if (s < 0 || bind(s, (struct sockaddr *)&address, sizeof address) < 0) return 1;
  for (;;) {
    char buffer[65536];
    struct sockaddr_storage peer;
    socklen_t peer_length = sizeof peer;
    ssize_t n = recvfrom(s, buffer, sizeof buffer, 0, (struct sockaddr *)&peer, &peer_length);
    if (n >= 0) sendto(s, buffer, (size_t)n, 0, (struct sockaddr *)&peer, peer_length);
  }
}
