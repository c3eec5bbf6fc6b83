#include "common/default_model/default_model_files.h"

// Each file is put into .rodata by the assembler's .incbin, between a start
// and an end label. TANDEM_DEFAULT_MODEL_DIR (an absolute path, from CMake)
// names the directory. The compiler does not see these files as inputs, so
// CMake lists them as this object's dependencies and passes their hash as a
// define (which is what makes ccache see a change).
#ifndef TANDEM_DEFAULT_MODEL_DIR
#error "TANDEM_DEFAULT_MODEL_DIR must name common/default_model/trained"
#endif

#define TANDEM_EMBED_FILE(symbol, file)                                  \
  asm(".pushsection .rodata\n"                                           \
      ".balign 64\n"                                                     \
      ".globl " #symbol "_begin\n" #symbol "_begin:\n"                   \
      ".incbin \"" TANDEM_DEFAULT_MODEL_DIR "/" file "\"\n"              \
      ".globl " #symbol "_end\n" #symbol "_end:\n"                       \
      ".byte 0\n"                                                        \
      ".popsection\n");                                                  \
  extern "C" const char symbol##_begin[];                                \
  extern "C" const char symbol##_end[];

TANDEM_EMBED_FILE(tandem_default_model_config_json, "config.json")
TANDEM_EMBED_FILE(tandem_default_model_safetensors, "model.safetensors")
TANDEM_EMBED_FILE(tandem_default_model_tokenizer_json, "tokenizer.json")
TANDEM_EMBED_FILE(tandem_default_model_tokenizer_config_json, "tokenizer_config.json")

namespace tandem {
namespace {

std::string_view Between(const char* begin, const char* end) {
  return std::string_view(begin, static_cast<size_t>(end - begin));
}

}  // namespace

std::span<const DefaultModelFile> DefaultModelFiles() {
  static const DefaultModelFile kFiles[] = {
      {"config.json",
       Between(tandem_default_model_config_json_begin, tandem_default_model_config_json_end)},
      {"model.safetensors",
       Between(tandem_default_model_safetensors_begin, tandem_default_model_safetensors_end)},
      {"tokenizer.json",
       Between(tandem_default_model_tokenizer_json_begin, tandem_default_model_tokenizer_json_end)},
      {"tokenizer_config.json", Between(tandem_default_model_tokenizer_config_json_begin,
                                        tandem_default_model_tokenizer_config_json_end)},
  };
  return kFiles;
}

}  // namespace tandem
