/* Links libbeeline_nostd_check.a into a program (ci/test.sh, with --gc-sections) and runs
 * it. The library's global allocator calls `beeline_core_must_not_allocate`, defined
 * nowhere: if any allocation is reachable from these entry points, this does not link. */
#include <stddef.h>
#include <stdint.h>

uint32_t beeline_nostd_parse(size_t len);
uint32_t beeline_nostd_session(uint8_t key_byte);

/* The prebuilt `alloc` crate (linked because `ring` declares it) is compiled for
 * unwinding and names this symbol; with panic = "abort" it is never called. */
void rust_eh_personality(void) {}

int main(void) {
    /* A zero header is refused (bad magic): 0; seal, open and the refused replay: 3. */
    return beeline_nostd_parse(80) + beeline_nostd_session(5) == 3 ? 0 : 1;
}
