// Wire encodings and the ONNX header reader: every rejection of untrusted input says what is
// wrong.
#include "runtime/tensor.hpp"

#include <gtest/gtest.h>

#include <cmath>
#include <limits>

#include "tests/runtime/runtime_support.hpp"

namespace mota::runtime {
namespace {

std::string floats(std::initializer_list<float> v) {
  std::string out(v.size() * 4, '\0');
  std::size_t i = 0;
  for (float f : v) std::memcpy(out.data() + 4 * i++, &f, 4);
  return out;
}

TEST(TensorTest, SpecsRoundTrip) {
  std::vector<TensorInfo> specs = {{"scores", DType::float32, {1, 4420, 2}},
                                   {"", DType::int64, {3}}};
  std::string h = format_specs(specs);
  EXPECT_EQ(h, "scores:float32:1,4420,2;:int64:3");
  auto back = parse_specs(h);
  ASSERT_TRUE(back) << back.error().message();
  ASSERT_EQ(back->size(), 2u);
  EXPECT_EQ((*back)[0].name, "scores");
  EXPECT_EQ((*back)[0].shape, (Shape{1, 4420, 2}));
  EXPECT_EQ((*back)[1].dtype, DType::int64);
}

TEST(TensorTest, SpecsRejectGarbage) {
  auto msg = [](std::string_view h) {
    auto r = parse_specs(h);
    EXPECT_FALSE(r) << h;
    return r ? std::string() : r.error().message();
  };
  EXPECT_NE(msg("input").find("expected name:dtype:shape"), std::string::npos);
  EXPECT_NE(msg("x:float64:1").find("unknown dtype \"float64\""), std::string::npos);
  EXPECT_NE(msg("x:float32:1,0").find("positive integers"), std::string::npos);
  EXPECT_NE(msg("x:float32:1,-3").find("positive integers"), std::string::npos);
  EXPECT_NE(msg("x:float32:1,2,3,4,5,6,7,8,9").find("more than 8"), std::string::npos);
}

TEST(TensorTest, SplitRawChecksSizes) {
  std::vector<TensorInfo> specs = {{"a", DType::float32, {2}}, {"b", DType::uint8, {3}}};
  auto ok = split_raw(floats({1, 2}) + "xyz", specs);
  ASSERT_TRUE(ok) << ok.error().message();
  EXPECT_EQ((*ok)[1].data, "xyz");
  auto shortb = split_raw(floats({1, 2}) + "xy", specs);
  ASSERT_FALSE(shortb);
  EXPECT_NE(shortb.error().message().find("tensor 1 (b): needs 3 bytes"), std::string::npos)
      << shortb.error().message();
  auto longb = split_raw(floats({1, 2}) + "xyzw", specs);
  ASSERT_FALSE(longb);
  EXPECT_NE(longb.error().message().find("body has 12 bytes"), std::string::npos);
  auto huge = split_raw("", {{"h", DType::float32, {65536, 65536, 2}}});
  ASSERT_FALSE(huge);
  EXPECT_EQ(huge.error().code(), Errc::too_large);
}

// The serving path's split: views into the body (no copy), the same checks and messages.
TEST(TensorTest, SplitRawViewsBorrowTheBody) {
  std::vector<TensorInfo> specs = {{"a", DType::float32, {2}}, {"b", DType::uint8, {3}}};
  std::string body = floats({1, 2}) + "xyz";
  std::vector<TensorView> views = {{"stale", DType::int8, {}, "left over"}};
  auto ok = split_raw_views(body, specs, views);
  ASSERT_TRUE(ok) << ok.error().message();
  ASSERT_EQ(views.size(), 2u);  // what was in the vector before is gone
  EXPECT_EQ(views[0].data.data(), body.data());
  EXPECT_EQ(views[1].data.data(), body.data() + 8);
  EXPECT_EQ(views[1].data, "xyz");
  EXPECT_EQ(views[1].name, "b");
  EXPECT_EQ(views[1].shape.data(), specs[1].shape.data());
  auto shortb = split_raw_views(floats({1, 2}) + "xy", specs, views);
  ASSERT_FALSE(shortb);
  EXPECT_NE(shortb.error().message().find("tensor 1 (b): needs 3 bytes"), std::string::npos)
      << shortb.error().message();
  auto huge = split_raw_views("", {{"h", DType::float32, {65536, 65536, 2}}}, views);
  ASSERT_FALSE(huge);
  EXPECT_EQ(huge.error().code(), Errc::too_large);
  EXPECT_NE(huge.error().message().find("tensor 0 (h)"), std::string::npos)
      << huge.error().message();
}

TEST(TensorTest, JsonRoundTripAndRejections) {
  std::vector<Tensor> t = {{"a", DType::float32, {1, 2}, floats({0.5f, -2})}};
  Json j = tensors_to_json(t);
  auto back = tensors_from_json(j);
  ASSERT_TRUE(back) << back.error().message();
  EXPECT_EQ((*back)[0].data, t[0].data);

  auto err = [](const char* text) {
    auto r = tensors_from_json(Json::parse(text));
    EXPECT_FALSE(r) << text;
    return r ? std::string() : r.error().message();
  };
  EXPECT_NE(err(R"([{"shape":[3],"data":[1,2]}])").find("has 2 elements"), std::string::npos);
  EXPECT_NE(err(R"([{"shape":[1],"data":["x"]}])").find("data[0]: element is not a number"),
            std::string::npos);
  EXPECT_NE(err(R"([{"shape":[1],"dtype":"uint8","data":[300]}])").find("out of uint8 range"),
            std::string::npos);
  EXPECT_NE(err(R"([{"shape":[0],"data":[]}])").find("shape"), std::string::npos);
  EXPECT_NE(err(R"({"shape":[1]})").find("must be an array"), std::string::npos);
}

TEST(TensorTest, NonFiniteIsDetected) {
  Tensor ok{"a", DType::float32, {2}, floats({1, 2})};
  Tensor nan{"a", DType::float32, {2}, floats({1, std::numeric_limits<float>::quiet_NaN()})};
  Tensor inf{"a", DType::float32, {1}, floats({-std::numeric_limits<float>::infinity()})};
  EXPECT_TRUE(all_finite(ok));
  EXPECT_FALSE(all_finite(nan));
  EXPECT_FALSE(all_finite(inf));
  EXPECT_EQ(max_abs_diff(floats({1, 2}), floats({1.5f, 2})), 0.5);
  EXPECT_FALSE(max_abs_diff(nan.data, ok.data));
}

}  // namespace
}  // namespace mota::runtime
