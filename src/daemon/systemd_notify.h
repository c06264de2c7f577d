// The systemd notification protocol (sd_notify(3)): one datagram such as "READY=1" to the unix
// socket named by $NOTIFY_SOCKET. Outside systemd (no $NOTIFY_SOCKET) it does nothing.
//
// Written here rather than linked from libsystemd: the protocol is a documented, stable
// interface of a few lines, and libsystemd would bring half a dozen libraries (gcrypt, lz4,
// zstd, lzma, libcap) into the resident memory of a daemon that runs on every node.
//
// Thread-safe.
#pragma once

#include <string_view>

namespace shim::daemon {

// Sends `state` ("READY=1", "RELOADING=1", "STOPPING=1", ...). Returns false when
// $NOTIFY_SOCKET is set but the message could not be sent.
bool NotifySystemd(std::string_view state);

}  // namespace shim::daemon
