#ifndef SIEVE_CCAPSTONE_SHIM_H
#define SIEVE_CCAPSTONE_SHIM_H
// <capstone/capstone.h> resolves through /usr/include even without pkg-config data.
#include <capstone/capstone.h>
#endif
