#include "common/rpc/metadata_interceptor.h"

#include "grpcpp/support/interceptor.h"

namespace tandem {
namespace {

class MetadataInterceptor final : public grpc::experimental::Interceptor {
 public:
  MetadataInterceptor(const std::string* key, const std::string* value) : key_(key), value_(value) {}

  void Intercept(grpc::experimental::InterceptorBatchMethods* methods) override {
    if (methods->QueryInterceptionHookPoint(grpc::experimental::InterceptionHookPoints::PRE_SEND_INITIAL_METADATA)) {
      methods->GetSendInitialMetadata()->emplace(*key_, *value_);
    }
    methods->Proceed();
  }

 private:
  // Owned by the factory, which the channel keeps for its lifetime.
  const std::string* key_;
  const std::string* value_;
};

class MetadataInterceptorFactory final : public grpc::experimental::ClientInterceptorFactoryInterface {
 public:
  MetadataInterceptorFactory(std::string key, std::string value) : key_(std::move(key)), value_(std::move(value)) {}
  grpc::experimental::Interceptor* CreateClientInterceptor(grpc::experimental::ClientRpcInfo*) override {
    return new MetadataInterceptor(&key_, &value_);
  }

 private:
  const std::string key_, value_;
};

}  // namespace

std::unique_ptr<grpc::experimental::ClientInterceptorFactoryInterface> MakeMetadataInterceptorFactory(
    std::string key, std::string value) {
  return std::make_unique<MetadataInterceptorFactory>(std::move(key), std::move(value));
}

}  // namespace tandem
