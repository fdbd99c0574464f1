//! Loading the XDP program, pinning its maps, and writing backends, writer and readers into them.
