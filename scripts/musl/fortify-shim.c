/* Debian's LLVM libunwind.a was compiled against glibc's fortified headers, so it calls
 * __fprintf_chk (only on its debug and fatal-error paths). musl has no _chk functions; this is
 * the unfortified equivalent, which is all the call needs. */
#include <stdarg.h>
#include <stdio.h>

int __fprintf_chk(FILE *stream, int flag, const char *format, ...)
{
	va_list args;
	int written;

	(void)flag;
	va_start(args, format);
	written = vfprintf(stream, format, args);
	va_end(args);
	return written;
}
